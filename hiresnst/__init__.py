"""hiresnst: neural style transfer at print and gigapixel sizes, in JAX.

`render(content, styles, config)` returns the stylised image; `make_objective` exposes the exact
(tiled) objective for tests and research. The CLI (`hiresnst`) is a thin layer over these.
"""

from .config import RenderConfig
from .errors import UserError
from .render import RenderResult, make_objective, render, render_with_info

__all__ = [
    "RenderConfig",
    "RenderResult",
    "UserError",
    "make_objective",
    "render",
    "render_with_info",
]
__version__ = "0.1.0"
