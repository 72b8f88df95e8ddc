"""The weights cache on disk, shared by VGG19's and Magenta's importers: where it is, file
hashes, and installing a directory atomically. No JAX here (the CLI's help reads it)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .errors import UserError

#: Where `hiresnst weights fetch` downloads torchvision's ImageNet-trained VGG19 from.
TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"


def home_dir() -> Path:
    """`$HIRESNST_HOME`, else `$XDG_CACHE_HOME/hiresnst`, else `~/.cache/hiresnst`."""
    env = os.environ.get("HIRESNST_HOME")
    if env:
        home, what = Path(env).expanduser(), "HIRESNST_HOME"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg).expanduser() if xdg else Path("~/.cache").expanduser()
        home, what = base / "hiresnst", "XDG_CACHE_HOME" if xdg else "the cache directory"
    if home.exists() and not home.is_dir():
        raise UserError(
            f"{what} {os.fspath(home)!r} is a file, not a directory; point it elsewhere"
        )
    return home


def network_dir(network: str, home: Path | None = None) -> Path:
    """The cache directory of one network's weights."""
    return (Path(home) if home is not None else home_dir()).expanduser() / "weights" / network


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def install(final: Path, write: Callable[[Path], None]) -> None:
    """Build a cache directory with `write(tmp)` beside `final` and rename it into place, so an
    interrupted import never leaves a half-written cache, and a re-import replaces the old one
    only once the new one is complete. Leftovers of killed imports (over an hour old) go."""
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
    except OSError as e:
        raise UserError(
            f"cannot write the weights cache {parent}: {e.strerror or e}; set HIRESNST_HOME to "
            "a writable directory"
        ) from None
    _clean_stale(parent, final.name)
    try:
        write(tmp)
        if final.exists():
            old = parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _clean_stale(parent: Path, name: str, max_age_s: float = 3600.0) -> None:
    now = time.time()
    for p in parent.glob(f".{name}.*"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime <= max_age_s:
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
