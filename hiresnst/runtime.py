"""Process-wide JAX settings that a render wants: the persistent compilation cache.

Compiling VGG19's value-and-grad takes seconds on a CPU and tens of seconds on a GPU at large
tiles; the persistent cache makes a second render of the same shapes start at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def cache_home() -> Path:
    """$HIRESNST_HOME, or ~/.cache/hiresnst."""
    return Path(os.environ.get("HIRESNST_HOME") or Path.home() / ".cache" / "hiresnst")


def enable_compilation_cache(path: Path | None = None) -> Path:
    """Point JAX's persistent compilation cache at `path` (default: <home>/jax-cache)."""
    path = path or cache_home() / "jax-cache"
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
