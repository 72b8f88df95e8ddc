"""Saving and restoring pytrees of arrays with orbax, shared by weights and render checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def save_tree(path: Path, tree: Mapping[str, Any]) -> None:
    """Write `tree` as an orbax checkpoint at `path` (which must not exist yet)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(Path(path).resolve(), dict(tree))
        ckpt.wait_until_finished()


def restore_tree(path: Path) -> dict:
    """Read an orbax checkpoint written by `save_tree` (arrays come back as NumPy/JAX arrays)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(Path(path).resolve())
