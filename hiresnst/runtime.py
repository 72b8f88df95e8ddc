"""Process-wide settings that a render wants: JAX's persistent compilation cache, and handing
freed heap memory back to the OS during host-resident renders.

Compiling VGG19's value-and-grad takes seconds on a CPU and tens of seconds on a GPU at large
tiles; the persistent cache makes a second render of the same shapes start at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import warnings
from pathlib import Path

import jax

from .cache import home_dir
from .errors import UserError
from .imageio import check_directory


def enable_compilation_cache(path: Path | None = None) -> Path:
    """Point JAX's persistent compilation cache at `path` (default: <home>/jax-cache).

    A cache entry that cannot be written (a full disk) costs only a recompile next time, so
    JAX's warning about it is not shown: a full disk is reported where it matters, by the
    output or checkpoint that cannot be written."""
    if path is None:
        check_directory(home_dir(), "the cache directory (HIRESNST_HOME)")
        path = home_dir() / "jax-cache"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create the compilation cache {path} ({e.strerror or e}); point "
            "HIRESNST_HOME at a writable directory"
        ) from None
    warnings.filterwarnings("ignore", "Error writing persistent compilation cache entry")
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def trim_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc's `malloc_trim`; elsewhere nothing).

    Host-resident renders call this after each tile row and each Gram pass (after each tile
    batch it cost ~25–85 ns per pixel-step on the 2-core CPU). glibc serves buffers under its
    (self-raising, up to 32 MB) mmap threshold from the heap, and the tile loop's windows,
    gradients and XLA temporaries fragment it: without a trim a 4-tile render peaked ~0.1 GB
    higher than a 1-tile one whose state was 25 MB smaller. A trim costs milliseconds to tens
    of milliseconds (measured: ~20 ms at 2048², tile 512), hence not after every batch."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
