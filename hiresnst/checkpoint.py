"""Render checkpoints: survive preemption (SIGTERM) and SIGKILL, resume bit for bit.

A checkpoint holds everything a level needs to continue exactly: the pyramid level and step,
the level's arrays (the image and the optimiser state, named the same on the device and on the
host: `image`, `mu`, `nu`, `count` for Adam), the RNG key, the per-level records and the losses
so far, plus the render's *fingerprint* (the settings that change the image and the hashes of
its inputs and weights). Resuming with a different fingerprint is refused, since it would
silently mix two renders; settings that do not change the image (tile, devices, state dir) may
differ.

Each array is one `.npy` file, written and read a block of rows at a time, so a host-resident
gigapixel level is saved from, and restored into, its memory-mapped state without a full-size
copy in RAM. A checkpoint is built in a temporary directory and renamed to `ckpt-LL-SSSSSSSS`
when complete (`meta.json` last), so a directory with that name is always whole; the newest
few are kept. A level's last checkpoint has step = the level's steps: the level is finished.
"""

from __future__ import annotations

import contextlib
import errno
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
from .errors import Preempted, UserError
from .signals import deferred

__all__ = [
    "Checkpointer",
    "CheckpointOptions",
    "Preempted",
    "Saved",
    "check_every",
    "stop_on_sigterm",
]

PREFIX = "ckpt-"
FORMAT = 2
#: A checkpoint being built: `.tmp-<tag>-LL-SSSSSSSS` (older versions: `.tmp-<pid>-LL-…`).
TEMP_DIR = re.compile(rf"^\.tmp-(?:{leftovers.TAG}|\d+)-\d+-\d+$")
#: Rows copied at a time between a checkpoint's files and the arrays they hold.
BLOCK_BYTES = 64 << 20


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
    """A restored checkpoint: its arrays are read-only memory maps of the files."""

    level: int
    step: int
    arrays: dict[str, np.ndarray]
    key: np.ndarray
    levels: list[dict]
    losses: list[float]
    path: Path


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
        self.resumed_from: Path | None = None

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
            if meta.get("format") != FORMAT:
                raise UserError(
                    f"checkpoint {path} is from another hiresnst version (format "
                    f"{meta.get('format')}); pass --restart to start over"
                )
            arrays = {name: read_array(path, name, dt) for name, dt in meta["arrays"].items()}
            saved = Saved(
                level=int(meta["level"]),
                step=int(meta["step"]),
                arrays=arrays,
                key=np.asarray(arrays.pop("key")),
                levels=list(meta["levels"]),
                losses=[float(v) for v in meta["losses"]],
                path=path,
            )
        except UserError:
            raise
        except Exception as e:  # json, numpy and key errors all mean "corrupt"
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
        self.resumed_from = path
        return saved

    def save(
        self,
        level: int,
        step: int,
        arrays: dict[str, Any],
        key: jax.Array,
        levels: list[dict],
        losses: list[float],
    ) -> Path:
        """Write a complete checkpoint of a level's named arrays atomically and drop the oldest
        beyond `keep`."""
        from .sharding import host_array, is_main_process

        self._last = time.monotonic()
        final = self.directory / f"{PREFIX}{level:02d}-{step:08d}"
        if not is_main_process():
            return final
        tmp = self.directory / f".tmp-{leftovers.tag()}-{level:02d}-{step:08d}"
        try:
            tmp.mkdir()
            dtypes = {}
            for name, a in {**arrays, "key": key}.items():
                host = a if isinstance(a, np.ndarray) else host_array(a)
                dtypes[name] = write_array(tmp, name, host)
            meta = {
                "format": FORMAT,
                "level": level,
                "step": step,
                "arrays": dtypes,
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
            if not isinstance(e, OSError):
                raise
            raise UserError(
                f"cannot save a checkpoint in {self.directory}: {describe_os_error(e)}; free "
                "space, raise the limit or choose another --checkpoint-dir (older checkpoints "
                "are kept)"
            ) from None
        for old in self._complete()[: -self.options.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final


#: What is full, by errno, when a write fails for want of space or a size limit.
NO_SPACE = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file-size limit)",
}


def describe_os_error(e: OSError) -> str:
    return NO_SPACE.get(e.errno or 0) or e.strerror or str(e)


def _block_rows(a: np.ndarray) -> int:
    return max(1, BLOCK_BYTES // max(1, a[:1].nbytes))


def write_array(directory: Path, name: str, a: np.ndarray) -> str:
    """Save `a` as directory/name.npy a block of rows at a time; returns its dtype's name
    (bfloat16 is stored as its uint16 bits, which .npy can hold). Plain writes, not a memory
    map: on a full disk a write through a map kills the process with SIGBUS, where `write`
    fails with ENOSPC (or EFBIG over a file-size limit), which `save` reports."""
    dtype = str(a.dtype)
    if dtype == "bfloat16":
        a = a.view(np.uint16)
    with open(directory / f"{name}.npy", "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(a.dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(f, {**header, "shape": a.shape})
        if a.ndim == 0:
            f.write(np.ascontiguousarray(a).tobytes())
        else:
            step = _block_rows(a)
            for r in range(0, len(a), step):
                f.write(np.ascontiguousarray(a[r : r + step]).tobytes())
        f.flush()
        os.fsync(f.fileno())
    return dtype


def read_array(directory: Path, name: str, dtype: str) -> np.ndarray:
    """A saved array as a read-only memory map (viewed as bfloat16 where it was one)."""
    a = np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
    if dtype == "bfloat16":
        import ml_dtypes

        a = a.view(ml_dtypes.bfloat16)
    elif str(a.dtype) != dtype:
        raise ValueError(f"{name}.npy holds {a.dtype}, not {dtype}")
    return a


def copy_rows(src: np.ndarray, dst: np.ndarray) -> None:
    """dst[...] = src a block of rows at a time (restoring into a memory-mapped state)."""
    if src.shape != dst.shape:
        raise UserError(
            f"checkpoint's array is {src.shape}, the level's is {dst.shape}; pass --restart"
        )
    step = _block_rows(dst)
    for r in range(0, len(dst), step):
        dst[r : r + step] = src[r : r + step]


def stop_on_sigterm() -> contextlib.AbstractContextManager[threading.Event]:
    """Within the block, SIGTERM (or Ctrl-C) sets the returned event instead of stopping the
    process, so the render can save a checkpoint first and raise `Preempted` (see
    `signals.deferred`). Outside the main thread the event simply never fires."""
    return deferred()
