"""The newest of a stream, let through at most once every so many seconds (what the app draws per epoch)."""

from __future__ import annotations

import math


class Newest:
    """Holds the newest item offered; hands it out when ``every`` seconds have passed since the last one
    went, or at once when asked (at the end of a run, on pause). Older items that were never handed out
    are dropped: only the newest is worth drawing.

    An epoch's pictures and diagnostics cost the UI's CPU that training would use; with epochs of a
    second or less (small sets, the GPU) drawing each one would cost more than it shows.
    """

    def __init__(self, every: float) -> None:
        self.every = every
        self.pending = None
        self.last = -math.inf  # when the last item went: the first goes at once

    def offer(self, item, now: float):
        """Keep ``item``; return it if it may go now (else None: :meth:`due` hands it out later)."""
        self.pending = item
        return self.due(now)

    def due(self, now: float):
        """The pending item, if its time has come."""
        if self.pending is None or now - self.last < self.every:
            return None
        return self.take(now)

    def take(self, now: float):
        """The pending item now, whatever the time (None if there is none)."""
        item, self.pending = self.pending, None
        if item is not None:
            self.last = now
        return item

    def reset(self) -> None:
        """A new stream (another run): nothing pending, its first item goes at once."""
        self.pending, self.last = None, -math.inf
