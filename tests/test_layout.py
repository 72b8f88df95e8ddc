"""The code's shape, checked: modules use each other's public names only, the top-level render
function and the CLI's render command stay short, the CLI's help loads no JAX, and the CLI's
options and the series spec's keys are the settings module's fields."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import typer

from hiresnst import config, series
from hiresnst.cli import CLI_OPTIONS, app

PACKAGE = Path(__file__).resolve().parents[1] / "hiresnst"


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            inside = node.level > 0 or (node.module or "").startswith("hiresnst")
            if inside:
                found += [
                    f"{path.name}:{node.lineno} {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    return found


def test_no_module_imports_another_modules_private_names():
    found = [f for p in sorted(PACKAGE.rglob("*.py")) for f in _private_imports(p)]
    assert found == []


def test_the_private_import_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from .objective import _secret\nfrom hiresnst.x import _y, ok\n")
    assert len(_private_imports(bad)) == 2


def test_render_function_and_cli_command_read_in_a_screen():
    from hiresnst.cli import render as command
    from hiresnst.render import render_with_info

    for fn in (render_with_info, command):
        assert len(inspect.getsource(fn).splitlines()) <= 60, fn.__name__


def test_help_imports_no_jax():
    code = (
        "import sys\nfrom hiresnst.cli import main\n"
        "for argv in (['--help'], ['render', '--help'], ['--version']):\n"
        "    assert main(argv) == 0, argv\n"
        "print('jax' in sys.modules, 'flax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_cli_options_are_the_settings_fields():
    command = typer.main.get_command(app).commands["render"]
    params = {p.name: p for p in command.params}
    fields = [f for f in config.settings_fields() if f.metadata["cli"]]
    expected = {"content", "styles", "output", *(f.name for f in fields)}
    expected |= {name for name, *_ in CLI_OPTIONS}
    assert set(params) == expected
    for f in fields:
        p = params[f.name]
        assert p.help == f.metadata["help"], f.name
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        assert flag in p.opts, f.name
        if f.metadata["parse"] is None:
            assert p.default == f.default, f.name


def test_cli_defaults_give_the_default_settings():
    """Options not given on the command line are the settings' defaults, parsed fields too."""
    from hiresnst.cli_options import settings_from_options

    command = typer.main.get_command(app).commands["render"]
    values = {p.name: p.default for p in command.params}
    assert settings_from_options(values) == config.RenderConfig()


def test_series_keys_are_the_settings_fields():
    assert set(series.CONFIG_FIELDS) == {f.name for f in config.settings_fields()}
    image = config.image_settings(config.RenderConfig())
    assert "tile_batch" not in image and "devices" not in image and "state_dir" not in image
    assert "style_weight" in image and "size" in image
