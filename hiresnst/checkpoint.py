"""Render checkpoints: survive preemption (SIGTERM) and SIGKILL, resume bit for bit.

A checkpoint holds everything the render loop needs to continue exactly: the pyramid level and
step, the image, the optimiser state's leaves, the RNG key, the per-level records and the losses
so far, plus the render's *fingerprint* (its settings and the hashes of its inputs and weights).
Resuming with a different fingerprint is refused, since it would silently mix two renders.

Each checkpoint is built in a temporary directory (orbax writes the arrays, then `meta.json`)
and renamed to `ckpt-LL-SSSSSSSS` when complete, so a directory with that name is always whole;
the newest few are kept.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from . import leftovers
from .errors import UserError
from .orbax_io import restore_tree, save_tree
from .signals import Stopped, deferred, last_signal, signal_name

PREFIX = "ckpt-"
FORMAT = 1
#: A checkpoint being built: `.tmp-<tag>-LL-SSSSSSSS` (older versions: `.tmp-<pid>-LL-…`).
TEMP_DIR = re.compile(rf"^\.tmp-(?:{leftovers.TAG}|\d+)-\d+-\d+$")


class Preempted(Stopped):
    """A stop signal arrived during the render, which stopped at its next step after saving a
    checkpoint in `path` (None: it had nowhere to save one). A `Stopped`, so a series stops too.
    `signum` defaults to the signal that arrived last (SIGTERM if none)."""

    def __init__(self, path: Path | None, signum: int | None = None) -> None:
        signum = last_signal() if signum is None else signum
        saved = (
            f"checkpoint saved in {path}; run the same command again to resume"
            if path is not None
            else "nothing saved; pass --checkpoint-dir to make renders resumable"
        )
        super().__init__(signum, f"stopped by {signal_name(signum)}; {saved}")
        self.path = path


@dataclass(frozen=True)
class CheckpointOptions:
    """Where and how often to checkpoint. Not part of the render's settings: changing these
    does not change the result."""

    directory: Path
    every: float = 300.0
    keep: int = 3
    restart: bool = False


@dataclass
class Saved:
    """A restored checkpoint."""

    level: int
    step: int
    x: np.ndarray
    opt_leaves: list[np.ndarray]
    key: np.ndarray
    levels: list[dict]
    losses: list[float]
    path: Path


def array_sha256(a: np.ndarray) -> str:
    """Hash of an input image as loaded (so a re-encoded but identical file matches)."""
    a = np.ascontiguousarray(a, np.float32)
    return hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest()


def check_every(seconds: float) -> None:
    """--checkpoint-every: a finite number of seconds ≥ 0 (NaN or inf used to mean, silently,
    only at level ends)."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UserError(
            f"--checkpoint-every must be a number of seconds ≥ 0 (0 = every step), got {seconds}"
        )


class Checkpointer:
    """Saves and restores one render's checkpoints in `options.directory`."""

    def __init__(self, options: CheckpointOptions, fingerprint: dict[str, Any]) -> None:
        check_every(options.every)
        if options.keep < 1:
            raise UserError(f"checkpoints to keep must be at least 1, got {options.keep}")
        self.options = options
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        self.directory = Path(options.directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(
                f"cannot create --checkpoint-dir {self.directory}: {e.strerror}"
            ) from None
        if options.restart:
            for d in self._complete():
                shutil.rmtree(d, ignore_errors=True)
        leftovers.clean(self.directory, TEMP_DIR)  # of renders killed while saving
        self._last = time.monotonic()

    def _complete(self) -> list[Path]:
        return sorted(d for d in self.directory.glob(PREFIX + "*") if (d / "meta.json").is_file())

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.options.every

    def restore(self) -> Saved | None:
        """The newest checkpoint, or None. Refuses one made with other settings."""
        found = self._complete()
        if not found:
            return None
        path = found[-1]
        try:
            meta = json.loads((path / "meta.json").read_text())
            tree = restore_tree(path / "state")
            saved = Saved(
                level=int(meta["level"]),
                step=int(meta["step"]),
                x=np.asarray(tree["x"]),
                opt_leaves=[np.asarray(tree["opt"][str(i)]) for i in range(len(tree["opt"]))],
                key=np.asarray(tree["key"]),
                levels=list(meta["levels"]),
                losses=[float(v) for v in meta["losses"]],
                path=path,
            )
        except Exception as e:  # json, orbax/tensorstore and key errors all mean "corrupt"
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise UserError(
                f"checkpoint {path} is corrupt ({detail}); delete it or pass --restart"
            ) from None
        if meta.get("fingerprint") != self.fingerprint:
            old = meta.get("fingerprint") or {}
            changed = sorted(
                k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k)
            )
            raise UserError(
                f"checkpoint in {self.directory} is from a render with other settings "
                f"(changed: {', '.join(changed)}); pass --restart to start over, or use "
                "another --checkpoint-dir"
            )
        return saved

    def save(
        self,
        level: int,
        step: int,
        x: jax.Array,
        opt_state: Any,
        key: jax.Array,
        levels: list[dict],
        losses: list[float],
    ) -> Path:
        """Write a complete checkpoint atomically and drop the oldest beyond `keep`."""
        from .sharding import host_array, is_main_process

        self._last = time.monotonic()
        final = self.directory / f"{PREFIX}{level:02d}-{step:08d}"
        if not is_main_process():
            return final
        leaves = jax.tree_util.tree_leaves(opt_state)
        tree = {
            "x": host_array(x),
            "opt": {str(i): host_array(leaf) for i, leaf in enumerate(leaves)},
            "key": host_array(key),
        }
        tmp = self.directory / f".tmp-{leftovers.tag()}-{level:02d}-{step:08d}"
        try:
            tmp.mkdir()
            save_tree(tmp / "state", tree)
            meta = {
                "format": FORMAT,
                "level": level,
                "step": step,
                "levels": levels,
                "losses": losses,
                "fingerprint": self.fingerprint,
                "saved_at": time.time(),
            }
            with open(tmp / "meta.json", "w") as f:
                json.dump(meta, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if not isinstance(e, Exception):
                raise
            problem = _no_space(e) or (e.strerror if isinstance(e, OSError) else None)
            if problem is None:
                raise
            raise UserError(
                f"cannot save a checkpoint in {self.directory}: {problem}; free space, raise "
                "the limit or choose another --checkpoint-dir (older checkpoints are kept)"
            ) from None
        for old in self._complete()[: -self.options.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final


#: Errors that mean the disk (or a quota or file-size limit) is full, as errno and as the text
#: that orbax and tensorstore wrap them in.
NO_SPACE = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file-size limit)",
}
_NO_SPACE_TEXT = {
    "no space left": errno.ENOSPC,
    "quota exceeded": errno.EDQUOT,
    "file too large": errno.EFBIG,
}


def _no_space(e: BaseException) -> str | None:
    """What is full when `e` (or what it wraps) is a full-disk error, else None."""
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return NO_SPACE[e.errno]
        text = str(e).lower()
        for words, code in _NO_SPACE_TEXT.items():
            if words in text:
                return NO_SPACE[code]
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def restore_opt_state(template: Any, leaves: list[np.ndarray]) -> Any:
    """Rebuild an optimiser state from saved leaves, with the structure of `template`."""
    treedef = jax.tree_util.tree_structure(template)
    if treedef.num_leaves != len(leaves):
        raise UserError(
            "checkpoint's optimiser state does not match this optimizer; pass --restart"
        )
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(v) for v in leaves])


def stop_on_sigterm() -> contextlib.AbstractContextManager[threading.Event]:
    """Within the block, SIGTERM (or Ctrl-C) sets the returned event instead of stopping the
    process, so the render can save a checkpoint first and raise `Preempted` (see
    `signals.deferred`). Outside the main thread the event simply never fires."""
    return deferred()
