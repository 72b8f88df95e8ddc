"""Command-line options made from the settings (`config.py`), shared by the `render` and
`video` commands, and the CLI's strict-JSON output. Imports typer but no JAX."""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

import typer

from .config import RenderConfig, setting_types, settings_fields


def setting_parameter(f: dataclasses.Field) -> inspect.Parameter:
    """A render setting as a command-line option: its flag, help and default from `config.py`;
    settings given as text (steps, layer lists) default to None, meaning "the setting's
    default", and are parsed by `settings_from_options`."""
    meta = f.metadata
    flag = meta["flag"] or "--" + f.name.replace("_", "-")
    if meta["repeat"]:
        option, kind = typer.Option(None, flag, help=meta["help"]), meta["cli_type"] | None
    elif meta["cli_type"] is not None:
        shown = meta["show"] if meta["show"] is not None else f.default
        option = typer.Option(None, flag, help=meta["help"], show_default=str(shown))
        kind = meta["cli_type"] | None
    else:
        option, kind = typer.Option(f.default, flag, help=meta["help"]), setting_types()[f.name]
    kw = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(f.name, kw, default=option, annotation=kind)


def settings_from_options(values: dict[str, Any]) -> RenderConfig:
    """The render settings given on the command line (text parsed by each field's parser;
    options not given keep the settings' defaults)."""
    fields = {}
    for f in settings_fields():
        if f.name not in values:
            continue
        value, parse = values[f.name], f.metadata["parse"]
        if value is None or (f.metadata["repeat"] and not value):
            continue
        fields[f.name] = parse(value) if parse else value
    return RenderConfig(**fields)


def json_line(record: Any) -> str:
    """Strict JSON on one line: non-finite numbers (a diverged loss) become null."""
    from .job import json_safe

    return json.dumps(json_safe(record), sort_keys=True, allow_nan=False, default=str)
