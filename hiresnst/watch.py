"""Watching a render from the command line: the progress display (rich bars on a terminal,
plain lines otherwise), snapshots, the live page and the zoomable output, behind one progress
callback. These options change what is written beside the output, never the image."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .errors import UserError
from .logprogress import LineLog
from .serve import LiveServer, LiveState, is_loopback, parse_serve
from .snapshot import Snapshots

DEFAULT_LOG_EVERY = 50


@dataclass(frozen=True)
class WatchOptions:
    """The CLI's output options for watching and viewing (validated by `parse`)."""

    log_every: int = DEFAULT_LOG_EVERY
    save_every: int | None = None
    serve: tuple[str, int] | None = None
    serve_token: str | None = None
    zoom: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls,
        log_every: int = DEFAULT_LOG_EVERY,
        save_every: int | None = None,
        serve: str | None = None,
        serve_token: str | None = None,
        zoom: str | None = None,
    ) -> WatchOptions:
        if log_every < 0:
            raise UserError(f"--log-every must be ≥ 0 (0: only every minute), got {log_every}")
        if save_every is not None and save_every < 1:
            raise UserError(f"--save-every must be ≥ 1 step, got {save_every}")
        where = None if serve is None else parse_serve(serve)
        if serve_token is not None and where is None:
            raise UserError("--serve-token needs --serve")
        if serve_token is not None and not serve_token.strip():
            raise UserError("--serve-token must not be empty")
        if where is not None and not is_loopback(where[0]) and serve_token is None:
            raise UserError(
                f"--serve {serve} listens beyond this machine: give --serve-token SECRET (the "
                "page asks for it), or serve on 127.0.0.1 and use an SSH tunnel"
            )
        from .zoom import parse_zoom

        return cls(log_every, save_every, where, serve_token, parse_zoom(zoom))


class Watch:
    """A context manager whose `update` is the render's progress callback. `display`: show
    progress (rich bars when stderr is a terminal, else `LineLog` lines); `enabled` False
    (another process of a multi-host render) turns everything off."""

    def __init__(
        self,
        options: WatchOptions,
        output: Path,
        display: bool = True,
        enabled: bool = True,
        terminal: bool | None = None,
    ) -> None:
        self.options = options
        self.output = output
        self.enabled = enabled
        terminal = sys.stderr.isatty() if terminal is None else terminal
        self._bar: Any = None
        self._lines: LineLog | None = None
        if enabled and display and terminal:
            from .progress import RenderProgress

            self._bar = RenderProgress(enabled=True)
        elif enabled and display:
            self._lines = LineLog(options.log_every)
        self.live: LiveState | None = None
        self._server: LiveServer | None = None
        self._announced = False
        if enabled and options.serve is not None:
            self.live = LiveState(output.name)
            self._server = LiveServer(self.live, *options.serve, options.serve_token)
        self.snapshots: Snapshots | None = None
        if enabled and (options.save_every is not None or self.live is not None):
            self.snapshots = Snapshots(
                output,
                options.save_every,
                live=self.live is not None,
                on_snapshot=None if self.live is None else self.live.set_snapshot,
            )

    def __enter__(self) -> Watch:
        if self._server is not None:
            self._server.__enter__()
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def update(self, p: Any) -> None:
        if self._server is not None and not self._announced:
            # Said once the render is under way, so that a render refused before its first
            # step (bad input, say) still says only its one `error:` line.
            self._announced = True
            sys.stderr.write(f"live page: {self._server.url}\n")
            sys.stderr.flush()
        if self._bar is not None:
            self._bar.update(p)
        if self._lines is not None:
            self._lines(p)
        if self.snapshots is not None:
            self.snapshots(p)
        if self.live is not None:
            self.live.update(p)

    def end_display(self) -> None:
        """Close the progress bars (before the final messages)."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def write_zoom(
        self, image: np.ndarray, metadata: dict[str, Any] | None, dpi: float | None
    ) -> list[Path]:
        """The requested zoomable outputs of the finished image, beside the output."""
        from .zoom import pyramid_tiff_path, write_dzi, write_pyramid_tiff

        written: list[Path] = []
        if not self.enabled:
            return written
        for kind in self.options.zoom:
            if self.live is not None:
                self.live.finish(f"writing the {kind} pyramid")
            if kind == "dzi":
                dzi, _, page = write_dzi(self.output, image, title=self.output.name)
                written += [dzi, page]
            else:
                tif = pyramid_tiff_path(self.output)
                written.append(write_pyramid_tiff(tif, image, metadata=metadata, dpi=dpi))
        return written

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
        if self.live is not None:
            failed = exc_type is not None
            self.live.finish(f"stopped: {exc}" if failed else f"wrote {self.output}", failed)
        if self._server is not None:
            self._server.__exit__(exc_type, exc, tb)
