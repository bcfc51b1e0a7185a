"""The server side of the rate limit, as Xquik documents it: per tier, a fixed window that
starts at the first request and admits N requests; the rest get 429 until it ends."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class FixedWindow:
    limit: int | None  # None: no limit
    window: float
    start: float | None = None
    count: int = 0
    rejected: int = 0

    def hit(self, now: float) -> float | None:
        """Count one request; None if admitted, else the seconds until the window ends."""
        if self.limit is None:
            return None
        if self.start is None or now >= self.start + self.window:
            self.start, self.count = now, 0
        if self.count >= self.limit:
            self.rejected += 1
            return self.start + self.window - now
        self.count += 1
        return None

    def consume(self, now: float, n: int) -> None:
        """Another client of the same Xquik account spends `n` of the window."""
        for _ in range(n):
            if self.hit(now) is not None:
                break

    @staticmethod
    def retry_after_header(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
