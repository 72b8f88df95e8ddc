"""Saving and restoring pytrees of arrays with orbax, shared by weights and render checkpoints.

orbax logs each failure of its writer and reader threads (a full disk, a truncated file) with a
traceback through absl's logger before the same error reaches the caller, which reports it as
one line; those logs are silenced for the duration of a call, and the late callbacks into a
closed event loop that follow such a failure are not printed at all.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def _late_callback_hook(previous: Any) -> Any:
    """`sys.unraisablehook` that drops one harmless error: after a failed write, tensorstore's
    threads finish the other writes and call back into orbax's event loop, which the failure
    already closed; each `RuntimeError: Event loop is closed` would print a traceback under
    the one-line message."""

    def hook(unraisable: Any) -> None:
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    hook.hiresnst_orbax = True  # type: ignore[attr-defined]
    return hook


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    if not getattr(sys.unraisablehook, "hiresnst_orbax", False):
        sys.unraisablehook = _late_callback_hook(sys.unraisablehook)
    loggers = [logging.getLogger(name) for name in ("absl", "orbax")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def save_tree(path: Path, tree: Mapping[str, Any]) -> None:
    """Write `tree` as an orbax checkpoint at `path` (which must not exist yet)."""
    import orbax.checkpoint as ocp

    with _quiet(), ocp.StandardCheckpointer() as ckpt:
        ckpt.save(Path(path).resolve(), dict(tree))
        ckpt.wait_until_finished()


def restore_tree(path: Path) -> dict:
    """Read an orbax checkpoint written by `save_tree` (arrays come back as NumPy/JAX arrays)."""
    import orbax.checkpoint as ocp

    with _quiet(), ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(Path(path).resolve())
