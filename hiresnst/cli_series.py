"""`hiresnst series SPEC.toml -o DIR`: render a grid of jobs, resumably (see `hiresnst.series`).

The main CLI mounts `series_command` as `hiresnst series`; `app` runs it on its own. A bad spec
raises `UserError` (one line, exit status 2 from the main CLI); failed jobs give exit status 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(add_completion=False)


def series_command(
    spec: Path = typer.Argument(..., help="The series spec (TOML); see examples/series.toml."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Output directory (created if missing)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the job table with each job's status; render nothing."
    ),
    shard: str | None = typer.Option(
        None,
        "--shard",
        help="Run only shard I of N (1-based), e.g. 2/4: the jobs whose index % N == I-1; "
        "auto: I and N from a Slurm job array (SLURM_ARRAY_TASK_ID/_COUNT) or a Kubernetes "
        "Indexed Job (JOB_COMPLETION_INDEX, and JOB_COMPLETION_COUNT set to its completions).",
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print JSON: one line a job with --dry-run, else a summary line."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    checkpoint_every: float = typer.Option(
        300.0, help="Seconds between a job's checkpoints (and at each level's end)."
    ),
) -> None:
    r"""Render every job of SPEC into OUTPUT, skipping jobs already done.

    SPEC is TOML: \[defaults] single values, \[grid] lists (every combination is a job).

    \[zip]: equal-length lists advanced together (crossed with the grid).

    Keys: content, style, any render option (size, steps, seed, ...), format, bit_depth, dpi.

    Each job writes OUTPUT/<name>.<format>, a line of OUTPUT/manifest.jsonl, a contact sheet.

    A failed job is recorded and the others go on; the exit status is then 1.
    """
    from . import series
    from .job import json_safe

    parsed = series.load_spec(spec)
    shard_t = series.parse_shard(shard)
    if dry_run:
        named = None if shard_t is None else f"{shard_t[0]}/{shard_t[1]}"
        _print_plan(series.plan(parsed, output, shard_t), len(parsed.jobs), named, json_out)
        return
    with series.SeriesDisplay(enabled=not quiet) as display:
        result = series.run(
            parsed, output, shard=shard_t, progress=display, checkpoint_every=checkpoint_every
        )
    if json_out:
        summary = {
            "output": str(output),
            "jobs": len(result.jobs),
            "rendered": result.rendered,
            "skipped": result.skipped,
            "busy": result.busy,
            "failed": [{"name": n, "error": e} for n, e in result.failed],
            "seconds": round(result.seconds, 3),
        }
        typer.echo(json.dumps(json_safe(summary), sort_keys=True, allow_nan=False))
    else:
        typer.echo(f"series: {result.summary()}; manifest in {output}", err=True)
        for name, error in result.failed:
            typer.echo(f"  failed: {name}: {error}", err=True)
    kinds = {
        (r.get("weights") or {}).get("kind")
        for r in result.records.values()
        if r.get("name") in result.rendered
    }
    if "random" in kinds:
        typer.echo(
            'note: some jobs used untrained random VGG19 weights (weights = "random"); '
            "this is recorded in the manifest and in each output's metadata",
            err=True,
        )
    if result.failed:
        raise typer.Exit(1)


def _print_plan(planned: list, total: int, shard: str | None, json_out: bool) -> None:
    if json_out:
        from .job import json_safe

        for p in planned:
            job = p.job
            line = {
                "index": job.index + 1,
                "name": job.name,
                "key": job.key,
                "status": p.status,
                "output": job.output_name,
                "settings": job.settings,
                "note": p.note,
            }
            typer.echo(
                json.dumps(json_safe(line), sort_keys=True, ensure_ascii=False, allow_nan=False)
            )
        return
    rows = [("#", "status", "name", "content", "style", "note")]
    for p in planned:
        rows.append(
            (
                str(p.job.index + 1),
                p.status,
                p.job.name,
                p.job.settings["content"],
                " + ".join(p.job.settings["style"]),
                p.note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.status] = counts.get(p.status, 0) + 1
    what = ", ".join(f"{n} {s}" for s, n in counts.items()) or "nothing"
    scope = f"shard {shard}: {len(planned)} of {total} jobs" if shard else f"{total} jobs"
    typer.echo(f"{scope} ({what}); dry run, nothing rendered")


app.command("series")(series_command)

__all__ = ["app", "series_command"]
