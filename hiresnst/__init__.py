"""hiresnst: neural style transfer at print and gigapixel sizes, in JAX.

`render(content, styles, config)` returns the stylised image; `make_objective` exposes the exact
(tiled) objective for tests and research. The CLI (`hiresnst`) is a thin layer over these.
The package imports JAX only when one of the rendering names is first used, so that the CLI's
help and settings load fast.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from .config import OutputOptions, RenderConfig
from .errors import UserError

__version__ = "0.2.0"

_LAZY = {
    "RenderResult": "render",
    "make_objective": "render",
    "render": "render",
    "render_with_info": "render",
    "make_render_plan": "plan",
}

__all__ = ["OutputOptions", "RenderConfig", "UserError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """`hiresnst.render` is the function, even after the `hiresnst.render` module is imported
    (the import system would otherwise replace the lazy name with the submodule)."""

    @property
    def render(self) -> Any:
        return importlib.import_module(".render", __name__).render

    @render.setter
    def render(self, _module: Any) -> None:
        pass


sys.modules[__name__].__class__ = _Package
