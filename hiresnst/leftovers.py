"""Names of temporary files and directories, and removing those that killed processes left.

Outputs and checkpoints are built under a temporary name beside their final one and renamed when
complete. A process killed by SIGKILL (or a power cut) leaves that temporary behind; the next
run in the same directory removes it when its name says it belongs to a process of this machine
that no longer runs, or when it has not changed for `MAX_AGE` seconds (its writer would have
touched it: it may belong to another machine sharing the directory, or be from an older
version without the process in its name).

A temporary name carries `<host>-<pid>-<random>`: a 6-hex hash of the host name, the process
id, and 12 random hex digits.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path

#: A temporary that no process has changed for this long is abandoned, whoever made it.
MAX_AGE = 3600.0
#: Longest name (bytes) a file may have on the usual file systems (ext4, XFS, APFS, NTFS).
NAME_MAX = 255
TAG = r"(?:(?P<host>[0-9a-f]{6})-(?P<pid>\d{1,10})-)?[0-9a-f]{12}"


@functools.cache
def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def tag() -> str:
    """`<host>-<pid>-<random>` for a new temporary name (see the module's docstring)."""
    return f"{_host()}-{os.getpid()}-{secrets.token_hex(6)}"


def fit_name(name: str, limit: int) -> str:
    """`name` cut to at most `limit` bytes of UTF-8, never inside a character."""
    return name.encode()[:limit].decode(errors="ignore")


def temp_file_name(final_name: str) -> str:
    """`.<final name>.<tag>.tmp`, within NAME_MAX bytes whatever the final name's length."""
    t = tag()
    return f".{fit_name(final_name, NAME_MAX - len(t) - 6)}.{t}.tmp"


TEMP_FILE = re.compile(rf"^\..+\.{TAG}\.tmp$", re.DOTALL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid we can ask about: keep it
    return True


def abandoned(path: Path, match: re.Match[str], max_age: float = MAX_AGE) -> bool:
    """Whether the temporary `path` (its name matched `match`, with the TAG's groups) was left
    by a dead process of this machine, or has not changed for `max_age` seconds."""
    try:
        mtime = path.lstat().st_mtime
    except OSError:
        return False
    if time.time() - mtime > max_age:
        return True
    host, pid = match.group("host"), match.group("pid")
    if host != _host() or pid is None or int(pid) == os.getpid():
        return False
    return not _alive(int(pid))


def clean(directory: str | os.PathLike[str], pattern: re.Pattern[str]) -> list[Path]:
    """Remove the abandoned temporaries in `directory` whose names match `pattern` (which holds
    the TAG's groups); return what was removed. Errors are ignored: this is tidying."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            m = pattern.match(entry.name)
            path = Path(entry.path)
            if m is None or not abandoned(path, m):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    return removed
