"""The exceptions that reach the user as one line: bad input (exit status 2) and a stop asked
for by SIGTERM or Ctrl-C (exit status 143 or 130; see `signals`)."""

from __future__ import annotations

from pathlib import Path

from .signals import Stopped, last_signal, signal_name


class UserError(Exception):
    """Bad input or options: the message says what is wrong and what to do.

    The CLI prints it as one line and exits with status 2, without a traceback; the Python API
    lets it propagate so scripts can catch it.
    """


class Preempted(Stopped):
    """A stop signal arrived during the render, which stopped at its next step after saving a
    checkpoint in `path` (None: it had nowhere to save one). A `Stopped` (BaseException), so
    `except Exception` handlers let it through and a series stops too. `signum` defaults to
    the signal that arrived last (SIGTERM if none)."""

    def __init__(self, path: Path | None, signum: int | None = None) -> None:
        signum = last_signal() if signum is None else signum
        saved = (
            f"checkpoint saved in {path}; run the same command again to resume"
            if path is not None
            else "nothing saved; pass --checkpoint-dir to make renders resumable"
        )
        super().__init__(signum, f"stopped by {signal_name(signum)}; {saved}")
        self.path = path
