"""Series of renders from a TOML spec: a grid of contents × styles × settings, run resumably.

A spec has up to three sections::

    [defaults]            # single values: any RenderConfig field, content, style, output options
    size = 256
    weights = "random"
    format = "png"        # png, jpg or tif; also bit_depth, quality, dpi

    [grid]                # each list is an axis; the jobs are the product of all axes
    content = ["a.jpg", "b.jpg"]
    style = ["starry.jpg", ["scream.jpg", "wave.jpg"]]   # a list inside = styles blended
    style_weight = [1e4, 1e5]

    [zip]                 # lists of equal length advanced together, crossed with the grid
    seed = [1, 2]         # ([[zip]] tables give several such axes)

In `[defaults]` a value is the value (`style = ["a.jpg", "b.jpg"]` is one job with two styles,
`steps = [400, 200]` one value per level); in `[grid]` and `[zip]` a list lists alternatives, so
wrap list-valued settings in another list there. A single value in `[grid]` is one alternative.
Paths (content, style, masks, an init image, a weights file) are relative to the spec's
directory. Jobs are ordered by the `[grid]` keys as written (the last varies fastest), then the
`[zip]` groups.

Each job is named `<content>_<styles>_<settings that vary across the series>_<hash>`: the hash is
of the canonical JSON of the job's settings as the spec gives them (defaults merged, numbers
normalised, paths as written), so a name is stable across runs and machines and stays the same
when hiresnst gains a setting.

`run(spec, out_dir)` renders the jobs not yet done into `out_dir/<name>.<format>`, records each in
`out_dir/manifest.jsonl` (one JSON line a job: settings, output, sha256, timings, losses, weights)
and redraws `out_dir/contact-sheet.jpg` after every job. A job is done when the manifest says it
succeeded and its output still exists with the recorded sha256; a failed job is recorded and the
series goes on. Several processes can share an output directory: the manifest is updated under a
lock (read, merge, write to a temporary file, rename) and a job being rendered is locked too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import operator
import os
import re
import shutil
import socket
import time
import tomllib
import traceback
import types
import typing
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from . import contact_sheet, imageio
from .cache import sha256_file
from .checkpoint import CheckpointOptions
from .config import INITS, OutputOptions, RenderConfig, setting_types
from .errors import Preempted, UserError
from .events import Progress
from .job import RenderJob, json_safe, run_job
from .signals import Stopped, signal_name

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking between processes
    fcntl = None  # type: ignore[assignment]

MANIFEST_NAME = "manifest.jsonl"
CONTACT_SHEET_NAME = "contact-sheet.jpg"
CHECKPOINTS_DIR = ".checkpoints"
THUMBS_DIR = ".thumbs"
LOCKS_DIR = ".locks"
MAX_JOBS = 100_000

SECTIONS = ("defaults", "grid", "zip")
INPUT_KEYS = ("content", "style")
OUTPUT_DEFAULTS: dict[str, Any] = {"format": "png", "bit_depth": 8, "quality": 95, "dpi": None}
FORMATS = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "tif": "tif", "tiff": "tif"}
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(RenderConfig))
KEYS = tuple(dict.fromkeys((*INPUT_KEYS, *CONFIG_FIELDS, *OUTPUT_DEFAULTS)))  # dpi may be both

#: Short prefixes of settings in job names (others use "<key>=").
ABBREVIATIONS = {
    "size": "px",
    "steps": "st",
    "scales": "sc",
    "min_size": "min",
    "seed": "seed",
    "weights": "w-",
    "optimizer": "",
    "learning_rate": "lr",
    "warmup": "wu",
    "content_weight": "cw",
    "style_weight": "sw",
    "tv_weight": "tv",
    "init": "init-",
    "pooling": "",
    "style_blend": "blend",
    "style_scale": "ss",
    "tile": "tile",
    "overlap": "ov",
    "tile_batch": "tb",
    "precision": "",
    "format": "",
    "bit_depth": "bit",
    "quality": "q",
    "dpi": "dpi",
}
HUMAN_NAME_MAX = 72
HASH_CHARS = 8


# ------------------------------------------------------------------------------- spec and jobs


@dataclass(frozen=True, eq=False)
class Job:
    """One render of a series."""

    index: int  # position in the full (unsharded) job list, 0-based
    name: str
    key: str  # sha256 (hex) of the canonical JSON of `settings`
    settings: dict[str, Any]  # the job's settings as the spec gives them, normalised
    content: Path
    styles: tuple[Path, ...]
    config: RenderConfig
    format: str = "png"
    bit_depth: int = 8
    quality: int = 95
    dpi: float | None = None

    @property
    def output_name(self) -> str:
        return f"{self.name}.{self.format}"

    def output_path(self, out_dir: str | os.PathLike[str]) -> Path:
        return Path(out_dir) / self.output_name

    def checkpoint_dir(self, out_dir: str | os.PathLike[str]) -> Path:
        """Where this job's render keeps its checkpoints (`DIR/.checkpoints/<name>`)."""
        return Path(out_dir) / CHECKPOINTS_DIR / self.name


@dataclass(frozen=True, eq=False)
class Spec:
    """A parsed series spec: its jobs in order, and how to lay them out on the contact sheet."""

    jobs: tuple[Job, ...]
    source: str = "<spec>"
    base_dir: Path = Path(".")
    varying: tuple[str, ...] = ()  # settings (besides content and style) that differ across jobs
    columns: int | None = None  # contact-sheet columns: a product of the fastest axes


class _Bad(Exception):
    """A value of the wrong type or range (turned into a UserError naming the line)."""


class _Locator:
    """Finds the line of a section or key in TOML text (tomllib does not report positions)."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
    _KEY = re.compile(
        r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
        r"""(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
    )

    def __init__(self, text: str | None) -> None:
        self.keys: dict[tuple[str, int, str], int] = {}
        self.sections: dict[tuple[str, int], int] = {}
        if not text:
            return
        table: tuple[str, ...] = ()
        group = 0
        counts: dict[tuple[str, ...], int] = {}
        depth = 0  # open brackets of a multi-line array
        for n, line in enumerate(text.splitlines(), 1):
            if depth > 0:
                depth = max(0, depth + _bracket_balance(line))
                continue
            m = self._HEADER.match(line)
            if m:
                table = _split_key(m.group(2))
                if m.group(1) == "[[":
                    group = counts[table] = counts.get(table, -1) + 1
                else:
                    group = 0
                if table:
                    self.sections.setdefault((table[0], group), n)
                    if len(table) > 1:
                        self.keys.setdefault((table[0], group, table[1]), n)
                continue
            m = self._KEY.match(line)
            if not m:
                continue
            path = table + _split_key(m.group(1))
            g = group if len(table) >= 1 else 0
            if len(path) == 1:
                self.sections.setdefault((path[0], 0), n)
            else:
                self.keys.setdefault((path[0], g, path[1]), n)
            depth = max(0, _bracket_balance(line[m.end() :]))

    def find(self, section: str | None, key: str | None = None, group: int = 0) -> int | None:
        if section is None:
            return None
        if key is not None:
            for g in (group, 0):
                if (section, g, key) in self.keys:
                    return self.keys[(section, g, key)]
        return self.sections.get((section, group)) or self.sections.get((section, 0))


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', text)
    return tuple(a or b or c for a, b, c in parts)


def _bracket_balance(line: str) -> int:
    """Net count of `[` minus `]` on a line, outside strings and comments."""
    balance = 0
    quote = ""
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#":
            break
        elif c == "[":
            balance += 1
        elif c == "]":
            balance -= 1
        i += 1
    return balance


class _SpecParser:
    def __init__(self, source: str, text: str | None) -> None:
        self.source = source
        self.lines = _Locator(text)

    def error(
        self, message: str, section: str | None = None, key: str | None = None, group: int = 0
    ) -> UserError:
        line = self.lines.find(section, key, group)
        where = f"{self.source}:{line}" if line else self.source
        return UserError(" ".join(f"{where}: {message}".split()))


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and expand a spec file; paths in it are relative to its directory."""
    p = Path(path)
    if p.exists() and not p.is_dir() and not p.is_file():  # a FIFO would block for ever
        raise UserError(f"{p}: not a regular file (a pipe or device?); give the spec's .toml file")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{p}: no such spec file; check the path") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a directory; give the spec's .toml file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text ({e.reason}); save the spec as UTF-8") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read ({e.strerror or e})") from None
    return parse_spec(text, base_dir=p.parent, source=str(p))


def parse_spec(text: str, base_dir: str | os.PathLike[str] = ".", source: str = "<spec>") -> Spec:
    """Parse TOML text into a `Spec`; errors are `UserError`s naming the line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if m:
            where = f"{source}:{m.group(1)}:{m.group(2)}"
            message = message[: m.start()]
        else:
            where = f"{source}:{len(text.splitlines()) or 1}"
            message = message.replace(" (at end of document)", " at the end of the file")
        raise UserError(" ".join(f"{where}: invalid TOML: {message}".split())) from None
    return spec_from_dict(data, base_dir=base_dir, source=source, text=text)


def spec_from_dict(
    data: Mapping[str, Any],
    base_dir: str | os.PathLike[str] = ".",
    source: str = "<spec>",
    text: str | None = None,
) -> Spec:
    """Expand a spec given as a mapping (as `tomllib` returns it) into its jobs."""
    p = _SpecParser(source, text)
    base = Path(base_dir)
    if not isinstance(data, Mapping):
        raise p.error("a spec must be a table with [defaults], [grid] and [zip] sections")
    for name, value in data.items():
        if name not in SECTIONS:
            if name in KEYS or not isinstance(value, Mapping):
                message = f"top-level key {name!r}: put it under [defaults], [grid] or [zip]"
            else:
                message = (
                    f"unknown section [{name}]{_did_you_mean(name, SECTIONS)}; "
                    "a spec has [defaults], [grid] and [zip]"
                )
            raise p.error(message, name)
        if name == "zip" and isinstance(value, list):
            if not all(isinstance(g, Mapping) for g in value):
                raise p.error("zip must be a table: [zip] or [[zip]]", "zip")
        elif not isinstance(value, Mapping):
            raise p.error(f"{name} must be a table: write [{name}] and its keys under it", name)

    defaults_raw = dict(data.get("defaults", {}))
    grid_raw = dict(data.get("grid", {}))
    zip_raw = data.get("zip", [])
    zip_groups = [dict(g) for g in (zip_raw if isinstance(zip_raw, list) else [zip_raw])]

    defaults: dict[str, Any] = {}
    origin: dict[str, tuple[str, int]] = {}
    for key, value in defaults_raw.items():
        _check_key(p, "defaults", key)
        defaults[key] = _convert_value(p, "defaults", key, value)
        origin[key] = ("defaults", 0)

    axes: list[tuple[list[str], list[dict[str, Any]]]] = []
    for key, value in grid_raw.items():
        _check_key(p, "grid", key)
        values = value if isinstance(value, list) else [value]
        if not values:
            raise p.error(f"[grid] {key} is an empty list; give at least one value", "grid", key)
        converted = [_convert_value(p, "grid", key, v, i) for i, v in enumerate(values)]
        axes.append(([key], [{key: v} for v in converted]))
        origin[key] = ("grid", 0)

    for g, group in enumerate(zip_groups):
        length: int | None = None
        first = ""
        columns: dict[str, list[Any]] = {}
        for key, value in group.items():
            _check_key(p, "zip", key, g)
            if origin.get(key, ("defaults",))[0] != "defaults":
                raise p.error(
                    f"{key} is already a [{origin[key][0]}] axis; list it in one place only",
                    "zip",
                    key,
                    g,
                )
            if not isinstance(value, list):
                raise p.error(
                    f"[zip] {key} must be a list of values advanced together with the other "
                    "[zip] lists; put single values in [defaults]",
                    "zip",
                    key,
                    g,
                )
            if length is None:
                length, first = len(value), key
            elif len(value) != length:
                raise p.error(
                    f"[zip] lists must have equal lengths: {key} has {_values(len(value))} "
                    f"but {first} has {_values(length)}",
                    "zip",
                    key,
                    g,
                )
            columns[key] = [_convert_value(p, "zip", key, v, i, g) for i, v in enumerate(value)]
            origin[key] = ("zip", g)
        if length == 0:
            raise p.error(f"[zip] {first} is an empty list; give at least one value", "zip", first)
        if columns:
            rows = [{k: columns[k][i] for k in columns} for i in range(length or 0)]
            axes.append((list(columns), rows))

    for key in INPUT_KEYS:
        if key not in origin:
            raise p.error(f"no {key} given; set {key} in [defaults], [grid] or [zip]")

    for keys, rows in axes:
        texts = [_canonical_json(r) for r in rows]
        for i, t in enumerate(texts):
            if t in texts[:i]:
                section, group = origin[keys[0]]
                raise p.error(
                    f"[{section}] {', '.join(keys)}: value {i + 1} repeats value "
                    f"{texts.index(t) + 1}; remove the repeat",
                    section,
                    keys[0],
                    group,
                )

    count = math.prod(len(rows) for _, rows in axes)
    if count > MAX_JOBS:
        raise p.error(f"the spec expands to {count:,} jobs, more than {MAX_JOBS:,}; trim the grid")

    all_settings = []
    for combo in itertools.product(*(rows for _, rows in axes)):
        settings = dict(defaults)
        for part in combo:
            settings.update(part)
        all_settings.append(settings)

    canon = [_canonical(s) for s in all_settings]
    varying = tuple(
        k
        for k in dict.fromkeys(k for keys, _ in axes for k in keys)
        if k not in INPUT_KEYS and len({json.dumps(s.get(k), sort_keys=True) for s in canon}) > 1
    )
    seen: dict[str, int] = {}
    jobs = []
    for index, settings in enumerate(all_settings):
        key = hashlib.sha256(_canonical_json(settings).encode("utf-8")).hexdigest()
        if key in seen:
            raise p.error(
                f"jobs {seen[key] + 1} and {index + 1} have identical settings "
                f"({_describe_settings(settings, varying)}); remove the repeated value"
            )
        seen[key] = index
        jobs.append(_make_job(p, base, index, key, settings, varying, origin))
    names: dict[str, int] = {}
    for job in jobs:
        if job.name in names:  # pragma: no cover - needs a hash-prefix collision
            raise p.error(f"jobs {names[job.name] + 1} and {job.index + 1} share name {job.name}")
        names[job.name] = job.index

    columns_hint = _sheet_columns([len(rows) for _, rows in axes])
    return Spec(
        jobs=tuple(jobs), source=source, base_dir=base, varying=varying, columns=columns_hint
    )


def _sheet_columns(lengths: Sequence[int], most: int = 12) -> int | None:
    """Columns of the contact sheet that keep the grid's structure: the product of the fastest
    axes that first reaches about a square sheet (None: no such product, lay out freely)."""
    total = math.prod(lengths)
    products = list(itertools.accumulate((n for n in reversed(lengths) if n > 1), operator.mul))
    if not products:
        return None
    fits = [c for c in products if c <= most]
    wide = [c for c in fits if c * c >= total]
    return wide[0] if wide else (fits[-1] if fits else None)


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _values(n: int) -> str:
    return f"{n} value" if n == 1 else f"{n} values"


def _check_key(p: _SpecParser, section: str, key: str, group: int = 0) -> None:
    if key not in KEYS:
        raise p.error(
            f"unknown key {key!r} in [{section}]{_did_you_mean(key, KEYS)}; "
            f"the keys are {', '.join(KEYS)}",
            section,
            key,
            group,
        )


_HINTS = setting_types()


def _convert_value(
    p: _SpecParser,
    section: str,
    key: str,
    value: Any,
    element: int | None = None,
    group: int = 0,
) -> Any:
    try:
        return _convert_key(key, value)
    except _Bad as e:
        what = f"[{section}] {key}" + ("" if element is None else f" (value {element + 1})")
        raise p.error(f"{what} {e}, got {_show(value)}", section, key, group) from None


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert_key(key: str, value: Any) -> Any:
    if key == "content":
        if not isinstance(value, str) or not value:
            raise _Bad("must be the path of one image (a string)")
        return value
    if key == "style":
        styles = [value] if isinstance(value, str) else value
        if (
            not isinstance(styles, list)
            or not styles
            or not all(isinstance(s, str) and s for s in styles)
        ):
            raise _Bad('must be an image path or a list of paths blended in one job: ["a.jpg"]')
        return tuple(styles)
    if key == "format":
        if not isinstance(value, str) or value.lower().lstrip(".") not in FORMATS:
            raise _Bad("must be png, jpg or tif")
        return FORMATS[value.lower().lstrip(".")]
    if key == "bit_depth":
        if _convert(value, int) not in (8, 16):
            raise _Bad("must be 8 or 16")
        return value
    if key == "quality":
        if not 1 <= _convert(value, int) <= 100:
            raise _Bad("must be an integer from 1 to 100")
        return value
    if key == "dpi":
        dpi = _convert(value, float)
        if not (math.isfinite(dpi) and 0 < dpi <= imageio.MAX_DPI):
            raise _Bad(f"must be a number in (0, {imageio.MAX_DPI}]")
        return dpi
    return _convert(value, _HINTS[key])


def _convert(value: Any, hint: Any) -> Any:
    """`value` (as TOML gives it) as the type `hint` of a RenderConfig field, or _Bad."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option)
            except _Bad:
                continue
        raise _Bad(f"must be {_describe(hint)}")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        if isinstance(value, Mapping) and _is_pairs(hint):  # {conv4_2 = 1.0} for layer lists
            value = [[k, v] for k, v in value.items()]
        if isinstance(value, list):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_convert(v, args[0]) for v in value)
            if len(value) == len(args):
                return tuple(_convert(v, a) for v, a in zip(value, args, strict=True))
    else:  # pragma: no cover - a RenderConfig field of a type this parser does not know
        raise TypeError(f"unsupported setting type {hint!r}")
    raise _Bad(f"must be {_describe(hint)}")


def _is_pairs(hint: Any) -> bool:
    args = typing.get_args(hint)
    return len(args) == 2 and args[1] is Ellipsis and typing.get_origin(args[0]) is tuple


def _describe(hint: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a, plural) for a in args if a is not type(None))
    singular = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    plurals = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
    if hint in singular:
        return plurals[hint] if plural else singular[hint]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"a list of {_describe(args[0], True)}"
    if origin is tuple:
        return "[name, weight] pairs" if plural else "a [name, weight] pair"
    return str(hint)  # pragma: no cover


def _canonical(settings: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(_canonical_json(settings))


def _canonical_json(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _describe_settings(settings: Mapping[str, Any], keys: Sequence[str]) -> str:
    shown = [*INPUT_KEYS, *keys]
    return ", ".join(f"{k}={_show(_canonical({k: settings.get(k)})[k])}" for k in shown)


def _make_job(
    p: _SpecParser,
    base: Path,
    index: int,
    key: str,
    settings: dict[str, Any],
    varying: Sequence[str],
    origin: Mapping[str, tuple[str, int]],
) -> Job:
    fields = _resolve_config_paths(base, {k: v for k, v in settings.items() if k in CONFIG_FIELDS})
    styles = tuple(_resolve(base, s) for s in settings["style"])
    name = job_name(settings, varying, key)
    config = RenderConfig(**fields)
    try:
        config.validate(len(styles))
    except UserError as e:
        where = _key_in_message(str(e))
        section, group = origin.get(where or "", (None, 0))
        raise p.error(f"job {index + 1} ({name}): {e}", section, where, group) from None
    out = {k: settings.get(k, v) for k, v in OUTPUT_DEFAULTS.items()}
    if out["format"] == "jpg" and out["bit_depth"] == 16:
        k = "bit_depth"
        section, group = origin[k]
        raise p.error(
            f"job {index + 1} ({name}): JPEG holds 8 bits per channel; use png or tif for 16-bit",
            section,
            k,
            group,
        )
    return Job(
        index=index,
        name=name,
        key=key,
        settings=_canonical(settings),
        content=_resolve(base, settings["content"]),
        styles=styles,
        config=config,
        format=out["format"],
        bit_depth=out["bit_depth"],
        quality=out["quality"],
        dpi=out["dpi"],
    )


def _key_in_message(message: str) -> str | None:
    """The setting a RenderConfig.validate message is about: its --flag, else a key it names."""
    m = re.search(r"--([a-z][a-z-]*)", message)
    if m:
        return m.group(1).replace("-", "_")
    words = set(re.findall(r"[a-z][a-z_]*", message))
    named = [k for k in CONFIG_FIELDS if k in words]
    return max(named, key=len) if named else None


def _resolve_config_paths(base: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """The settings that name files (weights, masks, an init image) made relative to `base`."""
    weights = fields.get("weights")
    if weights is not None and weights not in ("auto", "random"):
        fields["weights"] = str(_resolve(base, weights))
    init = fields.get("init")
    if init is not None and init not in INITS:
        fields["init"] = str(_resolve(base, init))
    if fields.get("content_mask") is not None:
        fields["content_mask"] = str(_resolve(base, fields["content_mask"]))
    if fields.get("style_masks"):
        fields["style_masks"] = tuple((i, str(_resolve(base, m))) for i, m in fields["style_masks"])
    return fields


def _resolve(base: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def _slug(text: str, limit: int) -> str:
    s = re.sub(r"[^A-Za-z0-9._,+=-]+", "-", text).strip("-.")
    return s[:limit].rstrip("-.") or "x"


def _short(value: Any, key: str = "") -> str:
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (list, tuple)) for v in value):  # layer lists
            return ",".join(_short(v[0]) for v in value)
        return ",".join(_short(v, key) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and key == "weights" and value not in ("auto", "random"):
        return Path(value).stem
    return str(value)


def job_name(settings: Mapping[str, Any], varying: Sequence[str], key: str) -> str:
    """`<content>_<style+style>_<varying settings>_<hash prefix>`, safe as a file name."""
    parts = [_slug(Path(settings["content"]).stem, 24)]
    parts.append("+".join(_slug(Path(s).stem, 16) for s in settings["style"]))
    for k in varying:
        if k in settings:
            parts.append(_slug(ABBREVIATIONS.get(k, f"{k}=") + _short(settings[k], k), 24))
    human = "_".join(parts)
    if len(human) > HUMAN_NAME_MAX:
        human = human[:HUMAN_NAME_MAX].rstrip("_-.,+=")
    return f"{human}_{key[:HASH_CHARS]}"


def as_spec(spec: Spec | str | os.PathLike[str] | Mapping[str, Any]) -> Spec:
    """A `Spec` from a spec, a spec file's path or a mapping (paths relative to the cwd)."""
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, Mapping):
        return spec_from_dict(spec)
    return load_spec(spec)


#: Array-job variables read by `--shard auto`: (index, count, the index's first value) per
#: scheduler. Kubernetes gives an Indexed Job's pods JOB_COMPLETION_INDEX only: set
#: JOB_COMPLETION_COUNT to the Job's `completions` in its pod template (see the README).
SHARD_VARIABLES = (
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),
    ("JOB_COMPLETION_INDEX", "JOB_COMPLETION_COUNT", None),
)


def shard_from_environment(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """`--shard auto`: (I, N), 1-based, from a Slurm job array (task ID counted from
    SLURM_ARRAY_TASK_MIN, in steps of SLURM_ARRAY_TASK_STEP) or a Kubernetes Indexed Job."""
    env = os.environ if env is None else env
    for index_var, count_var, min_var in SHARD_VARIABLES:
        if index_var not in env and count_var not in env:
            continue
        for var in (index_var, count_var):
            if var not in env:
                raise UserError(f"--shard auto: {index_var} and {count_var} must both be set")
        index, count = (_env_int(env, v) for v in (index_var, count_var))
        if min_var is not None:
            base = _env_int(env, min_var) if min_var in env else 0
            step = _env_int(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
            if step < 1 or (index - base) % step:
                raise UserError(
                    f"--shard auto: {index_var}={index} is not on the array's range "
                    f"(from {base} in steps of {step}); give --shard I/N"
                )
            index = (index - base) // step
        if count < 1 or not 0 <= index < count:
            raise UserError(
                f"--shard auto: {index_var} gives shard {index} (from 0) of {count_var}={count}; "
                "the index must be below the count"
            )
        return index + 1, count
    raise UserError(
        "--shard auto found no array-job variables (SLURM_ARRAY_TASK_ID and "
        "SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX and JOB_COMPLETION_COUNT); "
        "give --shard I/N"
    )


def _env_int(env: Mapping[str, str], name: str) -> int:
    text = env[name]
    if not re.fullmatch(r"\s*\d+\s*", text):
        raise UserError(f"--shard auto: {name} must be a whole number ≥ 0, got {text!r}")
    return int(text)


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """`"I/N"` (1-based) as (I, N), or `"auto"` from the environment (`shard_from_environment`);
    None for no sharding."""
    if shard is None:
        return None
    if isinstance(shard, tuple):
        i, n = shard
    elif str(shard).strip().lower() == "auto":
        i, n = shard_from_environment()
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
        if not m:
            raise UserError(f"--shard must look like I/N, e.g. 2/4; got {shard!r}")
        i, n = int(m.group(1)), int(m.group(2))
    if not 1 <= i <= n:
        raise UserError(f"--shard I/N needs 1 ≤ I ≤ N, got {i}/{n}")
    return i, n


def select_shard(jobs: Sequence[Job], shard: str | tuple[int, int] | None) -> list[Job]:
    """The jobs of shard I/N: those whose index % N == I - 1 (the shards partition the series)."""
    parsed = parse_shard(shard)
    if parsed is None:
        return list(jobs)
    i, n = parsed
    return [j for j in jobs if j.index % n == i - 1]


# ---------------------------------------------------------------------------------- manifest


def _atomic_write_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    imageio.atomic_write(str(path), lambda fh: fh.write(data))


@contextlib.contextmanager
def _file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive advisory lock on `path` (created if missing); yields whether it was got."""
    if fcntl is None:  # pragma: no cover - Windows
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            got = True
        except BlockingIOError:
            got = False
        yield got
    finally:
        os.close(fd)  # releases the lock


class Manifest:
    """`DIR/manifest.jsonl`: one JSON object a line, one line a job (the latest record)."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(out_dir)
        self.path = self.dir / MANIFEST_NAME
        self.lock_path = self.dir / LOCKS_DIR / "manifest.lock"

    def read(self) -> dict[str, dict[str, Any]]:
        """Records by job key, in file order (a later line for a key wins)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{self.path}: cannot read the manifest ({e})") from None
        records: dict[str, dict[str, Any]] = {}
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("key"), str):
                warnings.warn(f"{self.path}:{n}: ignoring an unreadable line", stacklevel=2)
                continue
            records.pop(record["key"], None)
            records[record["key"]] = record
        return records

    def update(self, record: Mapping[str, Any], order: Sequence[str]) -> dict[str, dict]:
        """Replace the record of `record["key"]`, keeping lines in job order; atomic and locked.

        The file is re-read under the lock, so records written meanwhile by another process
        (another shard in the same directory) are kept. Returns all records.
        """
        with _file_lock(self.lock_path):
            records = self.read()
            records[record["key"]] = dict(record)
            rank = {k: i for i, k in enumerate(order)}
            known = sorted((k for k in records if k in rank), key=rank.__getitem__)
            ordered = known + [k for k in records if k not in rank]
            text = "".join(
                json.dumps(records[k], sort_keys=True, ensure_ascii=False, default=str) + "\n"
                for k in ordered
            )
            _atomic_write_text(self.path, text)
        return {k: records[k] for k in ordered}


def job_status(job: Job, out_dir: str | os.PathLike[str], record: Mapping | None) -> str:
    """ "done" (recorded ok and the output is intact), "todo" (never run), "retry" (failed last
    time) or "redo" (recorded ok but the output is missing or changed)."""
    if record is None:
        return "todo"
    if record.get("status") != "ok":
        return "retry"
    output = Path(out_dir) / str(record.get("output", ""))
    if not output.is_file() or sha256_file(output) != record.get("sha256"):
        return "redo"
    return "done"


@dataclass
class PlannedJob:
    job: Job
    status: str
    note: str = ""


def plan(
    spec: Spec | str | os.PathLike[str] | Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    shard: str | tuple[int, int] | None = None,
) -> list[PlannedJob]:
    """What `run` would do, job by job, without rendering or writing anything."""
    spec = as_spec(spec)
    records = Manifest(out_dir).read() if Path(out_dir).is_dir() else {}
    planned = []
    for job in select_shard(spec.jobs, shard):
        missing = [str(p) for p in (job.content, *job.styles) if not p.is_file()]
        note = ("missing " + ", ".join(missing)) if missing else ""
        planned.append(PlannedJob(job, job_status(job, out_dir, records.get(job.key)), note))
    return planned


# ------------------------------------------------------------------------------------ running


class SeriesEvents(Protocol):
    """What `run` reports as it goes (see `SeriesDisplay` for the rich display)."""

    def series_start(self, jobs: Sequence[Job], todo: Sequence[Job]) -> None: ...

    def job_start(self, job: Job, number: int, total: int) -> None: ...

    def render_progress(self, p: Progress) -> None: ...

    def job_end(self, job: Job, record: Mapping[str, Any]) -> None: ...


@dataclass
class SeriesResult:
    """What a run did. `exit_code` is 1 if any job failed, else 0."""

    out_dir: Path
    jobs: list[Job]  # the jobs of this run (its shard)
    rendered: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, message)
    busy: list[str] = field(default_factory=list)  # being rendered by another process
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        parts = [f"{len(self.rendered)} rendered", f"{len(self.skipped)} already done"]
        if self.busy:
            parts.append(f"{len(self.busy)} busy in another process")
        parts.append(f"{len(self.failed)} failed")
        return f"{len(self.jobs)} jobs: " + ", ".join(parts) + f" ({self.seconds:.1f} s)"


def _thumb_path(out_dir: Path, sha256: str) -> Path:
    return out_dir / THUMBS_DIR / f"{sha256[:16]}.png"


def _save_thumb(out_dir: Path, sha256: str, thumb: Image.Image) -> None:
    import numpy as np

    path = _thumb_path(out_dir, sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.write_image(path, np.asarray(thumb.convert("RGB"), np.float32) / np.float32(255))


def _run_one(
    job: Job,
    spec: Spec,
    out_dir: Path,
    events: SeriesEvents | None,
    shard: str | None,
    checkpoint_every: float,
) -> tuple[dict[str, Any], Image.Image | None]:
    t0 = time.perf_counter()
    output = job.output_path(out_dir)
    record: dict[str, Any] = {
        "name": job.name,
        "key": job.key,
        "index": job.index,
        "settings": job.settings,
        "output": job.output_name,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "software": f"hiresnst {_version()}",
    }
    if shard:
        record["shard"] = shard
    thumb = None
    try:
        done = run_job(
            RenderJob(
                job.content,
                job.styles,
                job.config,
                output,
                OutputOptions(bit_depth=job.bit_depth, quality=job.quality),
                CheckpointOptions(job.checkpoint_dir(out_dir), every=checkpoint_every),
                {"series": {"name": job.name, "key": job.key, "spec": spec.source}},
            ),
            events.render_progress if events else None,
        )
        info = done.info
        inputs = info["inputs"]
        sha = sha256_file(output)
        thumb = contact_sheet.thumbnail_from_array(done.image)
        with contextlib.suppress(OSError, UserError):
            _save_thumb(out_dir, sha, thumb)
        with contextlib.suppress(OSError):
            inputs["content_sha256"] = sha256_file(job.content)
            inputs["styles_sha256"] = [sha256_file(s) for s in job.styles]
        levels = info.get("levels") or []
        record.update(
            status="ok",
            sha256=sha,
            bytes=output.stat().st_size,
            size=info.get("output_size") or [int(done.image.shape[1]), done.image.shape[0]],
            render_seconds=info.get("seconds"),
            loss=levels[-1].get("loss_last") if levels else None,
            levels=levels,
            weights=info.get("weights"),
            config=info.get("settings", dataclasses.asdict(job.config)),
            inputs=inputs,
        )
        if "resumed_from" in info:
            record["resumed_from"] = info["resumed_from"]
        shutil.rmtree(job.checkpoint_dir(out_dir), ignore_errors=True)
    except Preempted:
        raise  # SIGTERM: the job's checkpoint is saved; the same command resumes it
    except Exception as e:  # any failure of one job is recorded; the series goes on
        message = " ".join(str(e).split()) or type(e).__name__
        if not isinstance(e, UserError):
            message = f"{type(e).__name__}: {message}"
            record["traceback"] = traceback.format_exc(limit=20)
        record.update(status="failed", error=message)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return json_safe(record), thumb


def _version() -> str:
    from . import __version__

    return __version__


class _Sheet:
    """Redraws the contact sheet from the manifest, with thumbnails cached by output hash."""

    def __init__(self, spec: Spec, out_dir: Path) -> None:
        self.spec = spec
        self.out_dir = out_dir
        self.path = out_dir / CONTACT_SHEET_NAME
        self.thumbs: dict[str, Image.Image] = {}

    def add(self, sha256: str, thumb: Image.Image) -> None:
        self.thumbs[sha256] = thumb

    def _thumb(self, record: Mapping[str, Any]) -> Image.Image | None:
        sha = record.get("sha256")
        output = self.out_dir / str(record.get("output", ""))
        if not isinstance(sha, str) or not output.is_file():
            return None
        if sha not in self.thumbs:
            cached = _thumb_path(self.out_dir, sha)
            try:
                with Image.open(cached) as img:
                    self.thumbs[sha] = img.convert("RGB")
            except (OSError, ValueError):
                try:
                    self.thumbs[sha] = contact_sheet.thumbnail_from_file(output)
                except (OSError, ValueError, UserError):
                    return None
                with contextlib.suppress(OSError, UserError):
                    _save_thumb(self.out_dir, sha, self.thumbs[sha])
        return self.thumbs[sha]

    def write(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        cells = []
        done = failed = 0
        for job in self.spec.jobs:
            record = records.get(job.key)
            status = "pending" if record is None else str(record.get("status"))
            image = self._thumb(record) if status == "ok" and record is not None else None
            if status == "ok" and image is None:
                status = "pending"  # the output went missing: it will be rendered again
            done += status == "ok"
            failed += status == "failed"
            cells.append(contact_sheet.Cell(job.name, image, status))
        title = f"{Path(self.spec.source).name}: {done} of {len(cells)} done"
        if failed:
            title += f", {failed} failed"
        contact_sheet.write_contact_sheet(self.path, cells, columns=self.spec.columns, title=title)


def _refuse_overwriting_inputs(spec: Spec, out: Path) -> None:
    """No job's output (nor the manifest or contact sheet) may be any job's input: a content
    `OUT/portrait.png` would be overwritten by a job named `portrait`. All jobs, not a shard's:
    the other shards write theirs into the same directory."""
    outputs = [(f"job {j.name}'s output", j.output_path(out)) for j in spec.jobs]
    outputs += [("the manifest", out / MANIFEST_NAME)]
    outputs += [("the contact sheet", out / CONTACT_SHEET_NAME)]
    inputs: list[tuple[str, str | os.PathLike[str]]] = []
    for j in spec.jobs:
        files = RenderJob(j.content, j.styles, j.config, j.output_path(out)).inputs()
        inputs += [(f"input of job {j.name}", p) for p in files]
    imageio.refuse_overwriting_inputs(outputs, inputs)


def run(
    spec: Spec | str | os.PathLike[str] | Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    shard: str | tuple[int, int] | None = None,
    progress: SeriesEvents | None = None,
    compilation_cache: bool = True,
    checkpoint_every: float = 300.0,
) -> SeriesResult:
    """Render the jobs of `spec` (or of shard "I/N" of it) that are not done yet into `out_dir`.

    `spec` is a `Spec`, a spec file's path or a mapping. Jobs run in order; a failing job is
    recorded as failed and the others still run (`result.exit_code` is then 1). Bad specs raise
    `UserError` before anything is rendered. `progress` receives the events of `SeriesEvents`
    (e.g. a `SeriesDisplay`). `compilation_cache` turns on JAX's persistent compilation cache
    (`runtime.enable_compilation_cache`), so jobs after the first of a shape skip compiling.
    Each job checkpoints into `DIR/.checkpoints/<name>` every `checkpoint_every` seconds and at
    level ends; a job interrupted (SIGTERM, SIGKILL, a crash) resumes from there on the next
    run, and its checkpoints are removed once its output is written.
    """
    t0 = time.perf_counter()
    spec = as_spec(spec)
    shard_t = parse_shard(shard)
    shard_s = f"{shard_t[0]}/{shard_t[1]}" if shard_t else None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: not a directory; give an output directory for the series")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create the output directory ({e.strerror or e})") from e
    imageio.check_output_path(out / CONTACT_SHEET_NAME)  # writable, before any work
    _refuse_overwriting_inputs(spec, out)
    jobs = select_shard(spec.jobs, shard_t)
    manifest = Manifest(out)
    order = [j.key for j in spec.jobs]
    records = manifest.read()
    result = SeriesResult(out_dir=out, jobs=jobs, records=records)
    todo = []
    for job in jobs:
        if job_status(job, out, records.get(job.key)) == "done":
            result.skipped.append(job.name)
        else:
            todo.append(job)
    if progress:
        progress.series_start(jobs, todo)
    sheet = _Sheet(spec, out)
    if todo and compilation_cache:
        from .runtime import enable_compilation_cache

        enable_compilation_cache()
    for number, job in enumerate(todo, 1):
        with _file_lock(out / LOCKS_DIR / f"{job.name}.lock", blocking=False) as got:
            if not got:
                result.busy.append(job.name)
                if progress:
                    progress.job_end(job, {"name": job.name, "status": "busy"})
                continue
            records = manifest.read()  # another process may have finished it meanwhile
            if job_status(job, out, records.get(job.key)) == "done":
                result.skipped.append(job.name)
                if progress:
                    progress.job_end(job, {"name": job.name, "status": "done"})
                continue
            if progress:
                progress.job_start(job, number, len(todo))
            try:
                record, thumb = _run_one(job, spec, out, progress, shard_s, checkpoint_every)
            except Stopped as e:  # the job's temporary files are gone; finished jobs are kept
                saved = "its checkpoint is saved; " if getattr(e, "path", None) else ""
                raise Stopped(
                    e.signum,
                    f"stopped by {signal_name(e.signum)} during job {job.name}; {saved}run the "
                    "same command again to continue (finished jobs are kept)",
                ) from None
            records = manifest.update(record, order)
        if thumb is not None:
            sheet.add(record["sha256"], thumb)
        if record["status"] == "ok":
            result.rendered.append(job.name)
        else:
            result.failed.append((job.name, record.get("error", "")))
        with contextlib.suppress(OSError, UserError):
            sheet.write(records)
        if progress:
            progress.job_end(job, record)
    if not sheet.path.exists() and records:
        with contextlib.suppress(OSError, UserError):
            sheet.write(records)
    result.records = records
    result.seconds = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------------------ display


class SeriesDisplay:
    """A rich display on stderr: the series (jobs done, failures, ETA) with the current render's
    levels under it, and one log line a finished job. Use as a context manager."""

    def __init__(self, enabled: bool = True, console: Any = None) -> None:
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as Bars

        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self._series = Bars(
            TextColumn("[bold]series"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._levels = Bars(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
        )
        self._job_text = ""
        self._live = Live(
            Group(self._series, _Text(self), self._levels),
            console=self.console,
            transient=True,
            refresh_per_second=4,
        )
        self._task: Any = None
        self._level_tasks: dict[int, Any] = {}
        self._durations: list[float] = []
        self._job_t0 = 0.0
        self._fraction = 0.0
        self._remaining = 0
        self._failed = 0
        self._last_step: tuple[int, float] | None = None

    def __enter__(self) -> SeriesDisplay:
        if self.enabled:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._live.__exit__(*exc)

    def series_start(self, jobs: Sequence[Job], todo: Sequence[Job]) -> None:
        self._remaining = len(todo)
        self._task = self._series.add_task("", total=len(jobs), info="")
        self._series.update(self._task, completed=len(jobs) - len(todo))
        if self.enabled and len(todo) < len(jobs):
            self.console.print(f"{len(jobs) - len(todo)} of {len(jobs)} jobs already done")

    def job_start(self, job: Job, number: int, total: int) -> None:
        self._job_t0 = time.perf_counter()
        self._fraction = 0.0
        self._last_step = None
        self._job_text = f"job {number}/{total}: {job.name}"
        for task in self._level_tasks.values():
            self._levels.remove_task(task)
        self._level_tasks.clear()
        self._refresh_eta()

    def render_progress(self, p: Progress) -> None:
        if p.level not in self._level_tasks:
            label = f"scale {p.level + 1}/{p.levels} {p.size[1]}×{p.size[0]}"
            if p.tiles > 1:
                label += f" ({p.tiles} tiles)"
            self._level_tasks[p.level] = self._levels.add_task(label, total=p.steps, info="")
            self._last_step = None
        rate = ""
        if self._last_step is not None and p.elapsed > self._last_step[1] and p.step > 0:
            per_step = (p.elapsed - self._last_step[1]) / max(1, p.step - self._last_step[0])
            rate = f"  {1 / per_step:.2f} it/s"
        self._last_step = (p.step, p.elapsed)
        self._levels.update(
            self._level_tasks[p.level], completed=p.step, info=f"loss {p.loss:.4g}{rate}"
        )
        self._fraction = (p.level + p.step / max(1, p.steps)) / max(1, p.levels)
        self._refresh_eta()

    def job_end(self, job: Job, record: Mapping[str, Any]) -> None:
        """A job finished ("ok" or "failed"), or was found "done" or "busy" elsewhere."""
        status = record.get("status")
        seconds = float(record.get("seconds") or 0.0)
        if status in ("ok", "failed"):
            self._durations.append(seconds)
        self._remaining -= 1
        self._job_text = ""
        for task in self._level_tasks.values():
            self._levels.remove_task(task)
        self._level_tasks.clear()
        if status == "failed":
            self._failed += 1
        self._series.advance(self._task)
        if status == "ok":
            loss = record.get("loss")
            loss_s = f"  loss {loss:.4g}" if isinstance(loss, (int, float)) else ""
            line = f"[green]ok[/]     {job.name}  {seconds:.1f} s{loss_s}"
        elif status == "done":
            line = f"done   {job.name} (finished by another process)"
        elif status == "busy":
            line = f"busy   {job.name} (another process is rendering it)"
        else:
            line = f"[red]failed[/] {job.name}: {record.get('error', '')}"
        if self.enabled:
            self.console.print(line, highlight=False)
        self._refresh_eta()

    def _refresh_eta(self) -> None:
        if self._task is None:
            return
        elapsed = time.perf_counter() - self._job_t0 if self._job_text else 0.0
        if self._durations:
            per_job = sum(self._durations) / len(self._durations)
        elif self._fraction > 0.02:
            per_job = elapsed / self._fraction
        else:
            per_job = None
        info = f"[red]{self._failed} failed[/]  " if self._failed else ""
        if per_job is not None and self._remaining > 0:
            current_left = max(0.0, per_job - elapsed) if self._job_text else per_job
            eta = current_left + per_job * (self._remaining - 1)
            info += f"ETA {_hms(eta)}"
        self._series.update(self._task, info=info)


class _Text:
    def __init__(self, display: SeriesDisplay) -> None:
        self.display = display

    def __rich__(self) -> Any:
        from rich.text import Text

        return Text(self.display._job_text, style="bold", overflow="ellipsis", no_wrap=True)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
