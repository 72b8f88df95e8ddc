"""SIGTERM and Ctrl-C in every phase of a run, by one mechanism.

The CLI wraps a whole command in `stop_signals()`: SIGTERM and SIGINT then raise `Stopped`
wherever the main thread is (start-up, rendering, writing the output, between series jobs), so
that `except BaseException` clean-ups (atomic writes, checkpoint temp directories) remove their
temporary files and the CLI prints one line and exits 128 + the signal's number. `Stopped`
derives from BaseException, as KeyboardInterrupt does, so the `except Exception` handlers that
turn failures into messages (or record a series job as failed) let it through.

Code that can stop more gracefully — the render's step loop, which saves a checkpoint first —
runs inside `deferred()`: there a signal only sets the returned event, and the loop raises
(`checkpoint.Preempted`) at its next step. A second Ctrl-C within the block raises at once. A
signal that arrives in the block but is never acted on is delivered again when the block ends.

Only the main thread can catch signals; elsewhere both context managers do nothing. Signals
that the process inherited as ignored (SIGINT of a background job) stay ignored.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A stop signal (SIGTERM, or SIGINT from Ctrl-C) ended the run."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        super().__init__(message or f"stopped by {signal_name(signum)}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


class StopRequest(threading.Event):
    """Set when a stop signal arrived inside a `deferred()` block; `signum` says which."""

    signum: int = signal.SIGTERM


_deferred: list[StopRequest] = []
_last: list[int] = []  # the last stop signal received, for `last_signal`


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def last_signal(default: int = signal.SIGTERM) -> int:
    """The stop signal received most recently in this process (`default` if none)."""
    return _last[-1] if _last else default


def _handler(signum: int, frame: Any) -> None:
    _last[:] = [signum]
    if _deferred:
        request = _deferred[-1]
        if not (signum == signal.SIGINT and request.is_set()):  # a second Ctrl-C: stop now
            request.signum = signum
            request.set()
            return
    raise Stopped(signum)


def _catchable(signum: int) -> bool:
    """Not inherited as ignored (SIG_IGN), and we are on the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False
    return signal.getsignal(signum) is not signal.SIG_IGN


@contextlib.contextmanager
def _handlers() -> Iterator[bool]:
    """Install `_handler` for the catchable stop signals; yield whether any was installed."""
    previous = {s: signal.getsignal(s) for s in SIGNALS if _catchable(s)}
    for s in previous:
        signal.signal(s, _handler)
    try:
        yield bool(previous)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within the block, SIGTERM and Ctrl-C raise `Stopped` (see the module's docstring)."""
    with _handlers():
        yield


@contextlib.contextmanager
def deferred() -> Iterator[StopRequest]:
    """Within the block, a stop signal sets the returned event instead of raising.

    The block's code checks the event and stops in its own way. If the block ends normally with
    the event set, the signal is raised again after the block, so it is never lost (with the
    process's previous handlers in place: `Stopped` under `stop_signals`, else Python's own)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signals reach the main thread only: this request never fires
        return
    with contextlib.ExitStack() as stack:
        if not any(signal.getsignal(s) is _handler for s in SIGNALS):
            stack.enter_context(_handlers())
        _deferred.append(request)
        try:
            yield request
        finally:
            _deferred.remove(request)
        redeliver = request.is_set()
    if redeliver:
        signal.raise_signal(request.signum)
