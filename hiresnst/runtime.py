"""Process-wide JAX settings that a render wants: the persistent compilation cache.

Compiling VGG19's value-and-grad takes seconds on a CPU and tens of seconds on a GPU at large
tiles; the persistent cache makes a second render of the same shapes start at once.
"""

from __future__ import annotations

from pathlib import Path

import jax

from .weights import home_dir


def enable_compilation_cache(path: Path | None = None) -> Path:
    """Point JAX's persistent compilation cache at `path` (default: <home>/jax-cache)."""
    path = path or home_dir() / "jax-cache"
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
