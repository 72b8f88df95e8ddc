"""Tests for hiresnst.series, hiresnst.contact_sheet and the `series` command.

Renders are tiny (32 px, 1 step, random narrow weights) and their inputs are same-sized PNGs made
in tmp_path, so compiled steps are reused; tests about bookkeeping use a fake render instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hiresnst import cli_series, contact_sheet, imageio, series
from hiresnst.errors import UserError
from hiresnst.render import Progress, RenderResult

RENDER = importlib.import_module("hiresnst.render")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "series.toml"

HEAD = """\
[defaults]
size = 32
steps = 1
weights = "random"
widths = [4, 8, 8, 16, 16]
"""
GRID = """
[grid]
content = ["c1.png", "c2.png"]
style = ["s1.png", "s2.png"]
"""


def _images(directory: Path) -> None:
    rng = np.random.default_rng(7)
    for name in ("c1", "c2", "s1", "s2"):
        pixels = (rng.random((26, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(directory / f"{name}.png")


def _spec(directory: Path, body: str = GRID, head: str = HEAD) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    _images(directory)
    path = directory / "spec.toml"
    path.write_text(head + body, encoding="utf-8")
    return path


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / series.MANIFEST_NAME).read_text().splitlines()]


def _counting(calls: list[str], real=RENDER.render_with_info):
    def render(content, styles, config, progress=None, checkpoint=None):
        calls.append(Path(content).name)
        return real(content, styles, config, progress=progress, checkpoint=checkpoint)

    return render


def _fake(calls: list[str]):
    """A render that costs nothing and fails like the real one on a missing input."""

    def render(content, styles, config, progress=None, checkpoint=None):
        calls.append(Path(content).name)
        for p in (content, *styles):
            if not Path(p).exists():
                raise UserError(f"{p}: no such file; check the path")
        if progress:
            progress(Progress(0, 1, (26, 32), 1, 1, 2.5, 1, 0.01))
        info = {
            "settings": dataclasses.asdict(config),
            "weights": {"kind": "random"},
            "levels": [{"loss_first": 3.0, "loss_last": 2.5}],
            "seconds": 0.01,
            "output_size": [32, 26],
        }
        return RenderResult(np.full((26, 32, 3), 0.25 + 0.1 * len(calls) % 1, np.float32), info)

    return render


def _no_render(*args, **kwargs):
    raise AssertionError("nothing should be rendered")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The 2×2 grid rendered for real once: (spec, out dir, result, rendered contents)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HIRESNST_HOME", str(tmp_path_factory.mktemp("home")))
        spec = _spec(tmp_path_factory.mktemp("series"))
        calls: list[str] = []
        mp.setattr(RENDER, "render_with_info", _counting(calls))
        result = series.run(spec, spec.parent / "out")
    return spec, spec.parent / "out", result, calls


# --------------------------------------------------------------------------- running a grid


def test_grid_writes_outputs_manifest_and_contact_sheet(rendered):
    spec, out, result, calls = rendered
    assert result.exit_code == 0 and not result.failed
    assert len(result.rendered) == 4 and sorted(calls) == ["c1.png", "c1.png", "c2.png", "c2.png"]
    outputs = sorted(p.name for p in out.glob("*.png"))
    assert outputs == sorted(f"{n}.png" for n in result.rendered)
    lines = _manifest(out)
    assert [r["name"] for r in lines] == [j.name for j in series.load_spec(spec).jobs]
    for record in lines:
        output = out / record["output"]
        assert record["status"] == "ok"
        assert record["sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
        assert record["settings"]["size"] == 32 and record["settings"]["weights"] == "random"
        assert record["weights"]["kind"] == "random"
        assert np.isfinite(record["loss"]) and record["levels"][0]["steps"] == 1
        assert record["seconds"] > 0 and record["render_seconds"] > 0 and record["started"]
        assert record["config"]["size"] == 32 and len(record["inputs"]["styles_sha256"]) == 1
        meta = imageio.read_metadata(output)
        assert meta["series"]["name"] == record["name"] and meta["series"]["key"] == record["key"]
    with Image.open(out / series.CONTACT_SHEET_NAME) as sheet:
        assert sheet.format == "JPEG"
        cell = contact_sheet.THUMB_SIZE + 2 * contact_sheet.PAD
        assert sheet.width == 2 * cell  # the 2×2 grid: two columns
        assert sheet.height > 2 * cell


def test_rerun_renders_nothing(rendered, monkeypatch):
    spec, out, _, _ = rendered
    before = (out / series.MANIFEST_NAME).read_bytes()
    monkeypatch.setattr(RENDER, "render_with_info", _no_render)
    result = series.run(spec, out)
    assert result.exit_code == 0 and not result.rendered and len(result.skipped) == 4
    assert (out / series.MANIFEST_NAME).read_bytes() == before


def test_deleting_an_output_rerenders_only_it(rendered, tmp_path, monkeypatch):
    spec, out, result, _ = rendered
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)  # the manifest's output paths are relative: the dir can move
    victim = moved / f"{result.rendered[2]}.png"
    victim.unlink()
    calls: list[str] = []
    monkeypatch.setattr(RENDER, "render_with_info", _counting(calls))
    again = series.run(spec, moved)
    assert again.rendered == [result.rendered[2]] and len(again.skipped) == 3
    assert calls == ["c2.png"]
    assert victim.exists() and len(_manifest(moved)) == 4
    assert all(r["status"] == "ok" for r in _manifest(moved))


def test_changed_output_is_rendered_again(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    calls: list[str] = []
    monkeypatch.setattr(RENDER, "render_with_info", _fake(calls))
    first = series.run(spec, tmp_path / "out")
    target = tmp_path / "out" / f"{first.rendered[1]}.png"
    target.write_bytes(target.read_bytes() + b"edited")
    plan = series.plan(spec, tmp_path / "out")
    assert [p.status for p in plan] == ["done", "redo", "done", "done"]
    again = series.run(spec, tmp_path / "out")
    assert again.rendered == [first.rendered[1]] and len(calls) == 5


def test_failed_job_is_recorded_others_finish_and_exit_is_nonzero(tmp_path, monkeypatch):
    body = '\n[grid]\ncontent = ["c1.png", "missing.png"]\nstyle = ["s1.png"]\n'
    spec = _spec(tmp_path, body)
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli_series.app, [str(spec), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "failed: missing_s1_" in result.output and "no such file" in result.output
    records = {r["settings"]["content"]: r for r in _manifest(out)}
    assert records["c1.png"]["status"] == "ok" and (out / records["c1.png"]["output"]).exists()
    failed = records["missing.png"]
    assert failed["status"] == "failed" and "no such file" in failed["error"]
    assert "traceback" not in failed  # a UserError is a one-line message
    assert (out / series.CONTACT_SHEET_NAME).exists()
    # again: the finished job is skipped, the failed one is tried again and fails again
    calls: list[str] = []
    monkeypatch.setattr(RENDER, "render_with_info", _fake(calls))
    again = series.run(spec, out)
    assert calls == ["missing.png"] and again.skipped == [records["c1.png"]["name"]]
    assert again.exit_code == 1 and again.failed[0][0] == failed["name"]
    assert len(_manifest(out)) == 2


def test_unexpected_exception_is_recorded_with_traceback(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    calls: list[str] = []
    fake = _fake(calls)

    def flaky(content, styles, config, progress=None, checkpoint=None):
        if Path(styles[0]).name == "s2.png":
            raise RuntimeError("device out of memory")
        return fake(content, styles, config, progress)

    monkeypatch.setattr(RENDER, "render_with_info", flaky)
    result = series.run(spec, tmp_path / "out")
    assert len(result.rendered) == 2 and len(result.failed) == 2 and result.exit_code == 1
    assert result.failed[0][1] == "RuntimeError: device out of memory"
    failed = [r for r in _manifest(tmp_path / "out") if r["status"] == "failed"]
    assert len(failed) == 2 and "RuntimeError" in failed[0]["traceback"]


# ------------------------------------------------------------------------------------ shards


def test_shards_together_cover_the_grid_exactly_once(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    out = tmp_path / "out"
    calls: list[str] = []
    monkeypatch.setattr(RENDER, "render_with_info", _fake(calls))
    runner = CliRunner()
    one = runner.invoke(cli_series.app, [str(spec), "-o", str(out), "--shard", "1/2", "--json"])
    assert one.exit_code == 0, one.output
    first = json.loads(one.stdout.strip().splitlines()[-1])
    second = series.run(spec, out, shard="2/2")
    names = [j.name for j in series.load_spec(spec).jobs]
    assert len(first["rendered"]) == 2 and len(second.rendered) == 2
    assert sorted(first["rendered"] + second.rendered) == sorted(names)
    assert [r["name"] for r in _manifest(out)] == names  # both shards' lines, in job order
    assert {r["shard"] for r in _manifest(out)} == {"1/2", "2/2"}
    assert not series.run(spec, out, shard="1/2").rendered

    jobs = series.load_spec(spec).jobs
    for n in range(1, 6):
        covered = [j.index for i in range(1, n + 1) for j in series.select_shard(jobs, f"{i}/{n}")]
        assert sorted(covered) == list(range(len(jobs)))


@pytest.mark.parametrize("bad", ["0/2", "3/2", "2", "a/b", "1/0"])
def test_bad_shard_is_a_user_error(bad):
    with pytest.raises(UserError, match="--shard"):
        series.parse_shard(bad)


# ------------------------------------------------------------------------------- malformed specs


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("\n[grid]\ncontent = [\"c1.png\"\n", 8, ["invalid TOML"]),  # unclosed array
        ("\n[grid]\ncontent = 'c1.png'\nstlye = 's1.png'\n", 9, ["unknown key 'stlye'", "style"]),
        ("\n[defaults]\nsize = 32\n", 7, ["defaults", "twice"]),  # a table declared twice
        ("\n[grid]\ncontent = 'c1.png'\nstyle = 's1.png'\nsize = [32, 'big']\n", 10, ["integer"]),
        ("\n[grid]\ncontent = 'c1.png'\nstyle = 's1.png'\n[zip]\nseed = [1, 2]\ntile = [0]\n", 12,
         ["equal lengths", "tile has 1 value"]),
        ("\n[grid]\ncontent = 'c1.png'\nstyle = 's1.png'\noptimizer = ['adam', 'sgd']\n", 10,
         ["job 2", "optimizer"]),
        ("\n[grids]\ncontent = 'c1.png'\n", 7, ["unknown section [grids]", "did you mean"]),
        ("\n[grid]\ncontent = ['c1.png', 'c2.png']\nstyle = 's1.png'\nseed = [1, 1]\n", 10,
         ["seed", "repeats"]),
    ],
)  # fmt: skip
def test_malformed_spec_error_names_the_line(tmp_path, monkeypatch, body, line, words):
    spec = _spec(tmp_path, body)
    monkeypatch.setattr(RENDER, "render_with_info", _no_render)
    result = CliRunner().invoke(cli_series.app, [str(spec), "-o", str(tmp_path / "out")])
    assert isinstance(result.exception, UserError), result.output
    message = str(result.exception)
    assert "\n" not in message
    assert message.startswith(f"{spec}:{line}:"), message
    for word in words:
        assert word in message
    assert not (tmp_path / "out").exists()


def test_missing_inputs_in_spec_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such spec file"):
        series.load_spec(tmp_path / "nope.toml")
    with pytest.raises(UserError, match="no style given"):
        series.parse_spec("[defaults]\ncontent = 'a.png'\n")
    with pytest.raises(UserError, match=r"<spec>:3: .*JPEG holds 8 bits"):
        series.parse_spec("[defaults]\ncontent='a'\nbit_depth = 16\nstyle='b'\nformat='jpg'\n")


# -------------------------------------------------------------------------------------- dry run


def test_dry_run_prints_the_table_and_renders_nothing(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setattr(RENDER, "render_with_info", _no_render)
    result = CliRunner().invoke(cli_series.app, [str(spec), "-o", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["#", "status", "name", "content", "style", "note"]
    for job in series.load_spec(spec).jobs:
        assert any(job.name in ln and "todo" in ln for ln in lines)
    assert "4 jobs (4 todo)" in lines[-1]
    assert not out.exists()
    as_json = CliRunner().invoke(
        cli_series.app, [str(spec), "-o", str(out), "--dry-run", "--json", "--shard", "2/2"]
    )
    rows = [json.loads(ln) for ln in as_json.stdout.strip().splitlines()]
    assert [r["index"] for r in rows] == [2, 4] and rows[0]["status"] == "todo"


def test_dry_run_shows_done_jobs(rendered, monkeypatch):
    spec, out, _, _ = rendered
    monkeypatch.setattr(RENDER, "render_with_info", _no_render)
    planned = series.plan(spec, out)
    assert [p.status for p in planned] == ["done"] * 4


# ------------------------------------------------------------------------ spec semantics, names


def test_job_names_are_stable_and_readable(tmp_path):
    text = HEAD + '\n[grid]\ncontent = ["c1.png"]\nstyle = ["s1.png"]\nstyle_weight = [1e4, 1e5]\n'
    jobs = series.parse_spec(text, base_dir=tmp_path).jobs
    elsewhere = series.parse_spec(text, base_dir=tmp_path / "other" / "machine").jobs
    assert [j.name for j in jobs] == [j.name for j in elsewhere]  # paths as written, not resolved
    assert [j.name.rsplit("_", 1)[0] for j in jobs] == ["c1_s1_sw10000", "c1_s1_sw100000"]
    settings = {
        "content": "c1.png",
        "seed": 0,
        "size": 32,
        "steps": 1,
        "style": ["s1.png"],
        "style_weight": 10000.0,
        "weights": "random",
        "widths": [4, 8, 8, 16, 16],
    }
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    key = hashlib.sha256(canonical.encode()).hexdigest()
    same = series.parse_spec(
        HEAD + "seed = 0\nstyle = 's1.png'\ncontent = 'c1.png'\nstyle_weight = 10000\n"
    ).jobs
    assert same[0].key == key and same[0].name == f"c1_s1_{key[:8]}"
    assert jobs[0].key != key  # seed = 0 given explicitly is part of the settings
    assert jobs[0].checkpoint_dir(tmp_path) == tmp_path / ".checkpoints" / jobs[0].name


def test_defaults_grid_and_zip_semantics(tmp_path):
    text = """
[defaults]
style = ["a.png", "b.png"]      # one job, two styles blended
steps = [4, 2]                   # one value per level
scales = 2
size = 64

[grid]
content = ["x.png", "y.png"]
style_blend = [[1.0, 1.0], [3.0, 1.0]]

[zip]
seed = [1, 2, 3]
tv_weight = [0, 1, 2]
"""
    spec = series.parse_spec(text, base_dir=tmp_path)
    assert len(spec.jobs) == 2 * 2 * 3
    assert spec.columns == 6  # the zip and style_blend axes make rows; content changes by row
    first = spec.jobs[0]
    assert first.styles == (tmp_path / "a.png", tmp_path / "b.png")
    assert first.config.steps == (4, 2) and first.config.style_blend == (1.0, 1.0)
    assert [(j.config.seed, j.config.tv_weight) for j in spec.jobs[:3]] == [(1, 0), (2, 1), (3, 2)]
    assert [j.settings["content"] for j in spec.jobs[::3]] == ["x.png"] * 2 + ["y.png"] * 2
    assert set(spec.varying) == {"style_blend", "seed", "tv_weight"}
    assert "blend3,1_seed2_tv1" in spec.jobs[4].name
    layers = series.parse_spec(
        "[defaults]\ncontent='x'\nstyle='y'\nstyle_layers = {conv1_1 = 1, conv2_1 = 0.5}\n"
    )
    assert layers.jobs[0].config.style_layers == (("conv1_1", 1.0), ("conv2_1", 0.5))


def test_file_settings_are_relative_to_the_spec(tmp_path):
    """Masks, an init image and a weights file, like the content and styles, are found beside
    the spec, whatever the working directory; absolute paths and named inits stay as given."""
    text = """
[defaults]
content = "c.png"
style = ["a.png", "b.png"]
style_masks = [[0, "masks/left.png"], [1, "/abs/right.png"]]
content_mask = "masks/subject.png"
weights = "w/vgg19.pth"

[grid]
init = ["start.png", "noise"]
"""
    jobs = series.parse_spec(text, base_dir=tmp_path).jobs
    config = jobs[0].config
    assert config.style_masks == ((0, str(tmp_path / "masks/left.png")), (1, "/abs/right.png"))
    assert config.content_mask == str(tmp_path / "masks/subject.png")
    assert config.weights == str(tmp_path / "w/vgg19.pth")
    assert [j.config.init for j in jobs] == [str(tmp_path / "start.png"), "noise"]
    assert jobs[0].settings["content_mask"] == "masks/subject.png"  # names: paths as written


def test_example_spec_parses():
    spec = series.load_spec(EXAMPLE)
    assert len(spec.jobs) == 16
    assert all(j.content.name in ("tubingen.jpg", "golden_gate.jpg") for j in spec.jobs)
    assert len({j.name for j in spec.jobs}) == 16


# ------------------------------------------------------------------------ manifest, contact sheet


def test_manifest_update_keeps_other_records_and_skips_bad_lines(tmp_path):
    manifest = series.Manifest(tmp_path)
    manifest.update({"key": "b", "name": "B", "status": "ok"}, order=["a", "b"])
    with open(manifest.path, "a") as fh:
        fh.write('{"key": "zz", "trunc')  # what a crash mid-append would leave
    with pytest.warns(UserWarning, match="unreadable line"):
        records = manifest.update({"key": "a", "name": "A", "status": "failed"}, ["a", "b"])
    assert list(records) == ["a", "b"]
    lines = manifest.path.read_text().splitlines()
    assert [json.loads(ln)["key"] for ln in lines] == ["a", "b"]  # the bad line is gone
    assert not list(tmp_path.glob(".*.tmp"))


def test_contact_sheet_layout_and_labels():
    red = Image.new("RGB", (40, 20), (255, 0, 0))
    long = "golden_gate_the_scream+starry_night+shipwreck_sw100000_seed2_lr0.1_tv10_74f333c5"
    cells = [
        contact_sheet.Cell("short", red),
        contact_sheet.Cell(long, red),
        contact_sheet.Cell("broken", None, "failed"),
        contact_sheet.Cell("later", None, "pending"),
        contact_sheet.Cell("five", red),
    ]
    sheet = contact_sheet.make_contact_sheet(cells, columns=2, title="t")
    cs = contact_sheet
    cell_w = cs.THUMB_SIZE + 2 * cs.PAD
    cell_h = cs.THUMB_SIZE + 2 * cs.PAD + cs.LABEL_LINES * (cs.FONT_SIZE + 4)
    title_h = cs.TITLE_FONT_SIZE + 2 * cs.PAD
    assert sheet.size == (2 * cell_w, title_h + 3 * cell_h)

    def at(i: int, dx: int, dy: int) -> tuple[int, int, int]:
        x0 = (i % 2) * cell_w + cs.PAD
        y0 = title_h + (i // 2) * cell_h + cs.PAD
        return sheet.getpixel((x0 + dx, y0 + dy))

    assert at(0, 10, 80) == (255, 0, 0) and at(0, 10, 10) == cs.BACKGROUND  # fitted, centred
    assert at(2, 10, 10) == cs.FAILED and at(3, 10, 10) == cs.PLACEHOLDER
    assert at(4, 150, 80) == (255, 0, 0)
    font = contact_sheet._font(contact_sheet.FONT_SIZE)
    lines = contact_sheet.wrap_label(long, contact_sheet.THUMB_SIZE, font)
    assert len(lines) == cs.LABEL_LINES and lines[-1].endswith("74f333c5") and "…" in lines[-1]
    assert lines[0].startswith("golden_gate")
    assert all(font.getlength(ln) <= contact_sheet.THUMB_SIZE for ln in lines)
    assert contact_sheet.shorten("x" * 200, 50, font).count("…") == 1
    thumb = contact_sheet.thumbnail_from_array(np.ones((400, 1000, 3), np.float32))
    assert thumb.size == (160, 64)


def test_main_cli_exit_codes(tmp_path, monkeypatch, capsys):
    """Through `hiresnst series` once cli.py mounts it: 2 for a bad spec, 1 if a job failed."""
    from hiresnst import cli

    if not any(c.name == "series" for c in cli.app.registered_commands):
        pytest.skip("`series` is not mounted in hiresnst.cli yet")
    bad = _spec(tmp_path / "bad", "\n[grid]\ncontent = 'c1.png'\nstyle = 's1.png'\nsize = 'x'\n")
    assert cli.main(["series", str(bad), "-o", str(tmp_path / "o1")]) == 2
    assert f"{bad}:10:" in capsys.readouterr().err
    body = '\n[grid]\ncontent = ["c1.png", "missing.png"]\nstyle = "s1.png"\n'
    spec = _spec(tmp_path / "failing", body)
    monkeypatch.setattr(RENDER, "render_with_info", _fake([]))
    status = cli.main(["series", str(spec), "-o", str(tmp_path / "o2"), "-q"])
    assert status == 1, "main() must return the exit status of the command (typer.Exit(1))"


def test_job_killed_mid_render_resumes_from_its_checkpoint(tmp_path):
    """A series SIGKILLed while a job renders resumes that job from its checkpoint on the next
    run, and the output is bitwise the uninterrupted job's."""
    import signal
    import subprocess
    import sys
    import time

    head = HEAD.replace("steps = 1", "steps = 40\nbit_depth = 16")
    spec = _spec(tmp_path / "s", '\n[grid]\ncontent = ["c1.png"]\nstyle = ["s1.png"]\n', head)
    env = {**os.environ, "HIRESNST_HOME": str(tmp_path / "home")}
    full = series.run(spec, tmp_path / "full", compilation_cache=False)
    assert full.ok
    name = full.rendered[0]
    part = tmp_path / "part"
    argv = [sys.executable, "-m", "hiresnst.cli", "series", str(spec), "-o", str(part), "-q"]
    proc = subprocess.Popen([*argv, "--checkpoint-every", "0"], env=env, stderr=subprocess.PIPE)
    ck = part / series.CHECKPOINTS_DIR / name
    end = time.monotonic() + 240
    while not (ck.exists() and any((p / "meta.json").exists() for p in ck.glob("ckpt-*"))):
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()[1]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (part / f"{name}.png").exists()
    again = series.run(spec, part, compilation_cache=False)
    assert again.ok and again.rendered == [name]
    record = again.records[next(iter(again.records))]
    assert "resumed_from" in record
    assert not ck.exists()
    with Image.open(part / f"{name}.png") as a, Image.open(tmp_path / "full" / f"{name}.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
