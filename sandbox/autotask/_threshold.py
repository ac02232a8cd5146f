"""The tenant's request threshold: 10,000 requests per rolling 60 minutes, shared by every caller.

From reference/autotask.md §8: the count is per Autotask database (not per user or integration code),
over a rolling hour; responses slow down by about 0.5 s from 50 % of the threshold and 1 s from 75 %;
above it requests are refused (REST clients see HTTP 429) until the rolling count drops.
``ThresholdInformation`` reports the live count.

The clock is injected (``clock()`` returns seconds), so tests move time instead of sleeping. A refused
request is not counted: otherwise a client retrying in a loop would keep the tenant locked out for good.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SimClock", "Threshold", "Verdict"]


class SimClock:
    """Wall-clock seconds plus an offset that tests (or ``POST /__admin/clock``) move forward."""

    def __init__(self, offset: float = 0.0):
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    count: int  # requests in the window, this one included when allowed
    added_latency: float  # seconds to wait before answering (0 when refused)


class Threshold:
    """Rolling request counter for one tenant."""

    def __init__(
        self,
        *,
        limit: int = 10_000,
        window_seconds: float = 3600.0,
        latency_steps: tuple[tuple[float, float], ...] = ((0.75, 1.0), (0.5, 0.5)),
        latency_scale: float = 1.0,
        clock: Callable[[], float] | None = None,
    ):
        self.limit, self.window_seconds = limit, window_seconds
        self.latency_steps, self.latency_scale = latency_steps, latency_scale
        self.clock: Callable[[], float] = clock or SimClock()
        self._events: deque[list[float]] = deque()  # [timestamp, count], oldest first
        self._count = 0
        self.refused = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.window_seconds
        while self._events and self._events[0][0] <= horizon:
            self._count -= int(self._events.popleft()[1])

    def current(self) -> int:
        self._expire(self.clock())
        return self._count

    def record(self, n: int = 1) -> None:
        """Count `n` requests now without refusing any (other integrations' traffic, admin route)."""
        now = self.clock()
        self._expire(now)
        if self._events and self._events[-1][0] == now:
            self._events[-1][1] += n
        else:
            self._events.append([now, n])
        self._count += n

    def hit(self) -> Verdict:
        """Count one request if the tenant is under its threshold; say how long to delay it."""
        now = self.clock()
        self._expire(now)
        if self._count >= self.limit:
            self.refused += 1
            return Verdict(False, self._count, 0.0)
        self.record(1)
        used = self._count / self.limit
        delay = next((seconds for share, seconds in self.latency_steps if used >= share), 0.0)
        return Verdict(True, self._count, delay * self.latency_scale)

    def seconds_until_free(self) -> float:
        """How long until the oldest counted requests leave the window (0 when under the limit)."""
        now = self.clock()
        self._expire(now)
        if self._count < self.limit or not self._events:
            return 0.0
        return max(self._events[0][0] + self.window_seconds - now, 0.0)

    def clear(self) -> None:
        self._events.clear()
        self._count = 0
