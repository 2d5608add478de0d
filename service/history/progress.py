"""The import's progress: counts, rate and ETA; redrawn in place on a terminal, a line every few seconds in logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from service.history.summary import Summary


def _clock(seconds: float) -> str:
    """1:02:03 / 2:03."""
    s = int(max(0, seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Progress:
    """Renders `read/total · written · skipped · rate · ETA` after each page."""

    def __init__(
        self, stream: TextIO, *, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._interval = interval_s
        self._clock = clock
        self.total: int | None = None
        self._base = 0
        self._start = clock()
        self._last_line = self._start
        self._drawn = False
        self._printed = ""  # the last line printed in log mode (the final one is not printed twice)

    def begin(self, *, total: int | None, already_read: int) -> None:
        """Start timing; tickets read by earlier runs count towards the total but not towards the rate."""
        self.total = total
        self._base = already_read
        self._start = self._last_line = self._clock()

    def line(self, summary: Summary) -> str:
        """The progress text for the counts so far."""
        elapsed = self._clock() - self._start
        done_now = summary.read - self._base
        rate = done_now / elapsed if elapsed > 0 else 0.0
        total = f"/{self.total:,}" if self.total else ""
        text = (
            f"{summary.read:,}{total} read · {summary.written:,} written · "
            f"{summary.skipped_total:,} skipped · {rate:,.0f}/s"
        )
        if self.total and rate > 0:
            left = max(0, self.total - summary.read)
            text += f" · ETA {_clock(left / rate)}"
        return text

    def update(self, summary: Summary, *, force: bool = False) -> None:
        """Redraw (terminal) or print a line when the interval passed (logs)."""
        now = self._clock()
        if self._tty:
            self._stream.write("\r\033[K" + self.line(summary))
            self._drawn = True
        elif force or now - self._last_line >= self._interval:
            text = self.line(summary)
            if text != self._printed:
                self._stream.write(text + "\n")
            self._printed, self._last_line = text, now
        self._stream.flush()

    def note(self, message: str) -> None:
        """A message on its own line (a rate-limit wait), the progress line redrawn after it."""
        if self._tty and self._drawn:
            self._stream.write("\r\033[K")
        self._stream.write(message + "\n")
        self._stream.flush()

    def close(self, summary: Summary) -> None:
        """The final counts."""
        if self._tty:
            self.update(summary)
            self._stream.write("\n")
        else:
            self.update(summary, force=True)
        self._stream.flush()
