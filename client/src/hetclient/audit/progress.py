"""The audit's progress bar: one line, redrawn in place, on a terminal.

Typical usage::

    bar = ProgressBar(total=10_000, stream=progress_stream(), done=2_000)   # 2,000 resumed
    bar.advance(32)           # after each answered batch
    bar.close()               # the final state and a newline

It shows done/total, the percentage, the images per second of this run (answers resumed from
an earlier run are counted as done, not in the rate) and the time left at that rate.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_INTERVAL_S = 0.2
"""The bar is redrawn at most this often (and always at the end)."""
BAR_WIDTH = 30


class ProgressBar:
    """A one-line progress bar on ``stream`` (None: counts only, draws nothing)."""

    def __init__(self, total: int, stream: TextIO | None, *, done: int = 0,
                 label: str = "audit") -> None:
        self.total, self.done, self._stream, self._label = total, done, stream, label
        self._first = done
        self._start = time.perf_counter()
        self._last_draw = float("-inf")

    def advance(self, count: int) -> None:
        """``count`` more images answered."""
        self.done += count
        now = time.perf_counter()
        if now - self._last_draw >= REDRAW_INTERVAL_S or self.done >= self.total:
            self._last_draw = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The bar's text as drawn now."""
        now = time.perf_counter() if now is None else now
        share = self.done / self.total if self.total else 1.0
        filled = int(share * BAR_WIDTH)
        rate = (self.done - self._first) / max(now - self._start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"{left:.0f} s left" if left != float("inf") else "-- s left"
        return (f"{self._label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                f"{self.done}/{self.total} ({100 * share:.0f} %) {rate:.0f} img/s, {eta}")

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self._stream is not None:
            self._draw(time.perf_counter())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        if self._stream is None:
            return
        self._stream.write("\r" + self.line(now))
        self._stream.flush()


def progress_stream() -> TextIO | None:
    """stderr when it is a terminal, else None (no bar in logs and pipes)."""
    return sys.stderr if sys.stderr.isatty() else None
