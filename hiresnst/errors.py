"""The exceptions that reach the user as one line: bad input (exit status 2) and a stop asked
for by SIGTERM (exit status 143)."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input or options: the message says what is wrong and what to do.

    The CLI prints it as one line and exits with status 2, without a traceback; the Python API
    lets it propagate so scripts can catch it.
    """


class Preempted(Exception):
    """A stop was requested (SIGTERM): the render saved a checkpoint in `path` when it had a
    checkpoint directory (None otherwise) and stopped at the next step."""

    def __init__(self, path: Path | None) -> None:
        if path is None:
            text = (
                "stopped by SIGTERM; nothing saved (pass --checkpoint-dir to make renders "
                "resumable)"
            )
        else:
            text = f"stopped by SIGTERM; checkpoint saved in {path}"
        super().__init__(text)
        self.path = path
