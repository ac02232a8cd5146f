"""Exact's API limits: fixed minute and UTC-day windows per (client, division), headers in epoch ms.

The window lengths are options so tests can use a one-second "minute" and a tiny daily quota; the
arithmetic (fixed windows aligned to the epoch, resets reported in epoch milliseconds) is the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["RateLimiter", "Verdict"]


@dataclass
class _Window:
    start: float
    used: int = 0


@dataclass(frozen=True)
class Verdict:
    """The outcome of counting one call: allowed or which limit refused it, and the headers to send."""

    allowed: bool
    exceeded: str | None  # "minutely" or "daily"
    headers: dict[str, str]


class RateLimiter:
    """Count calls per (client_id, division); refuse with the limit that ran out."""

    def __init__(
        self,
        *,
        minutely: int = 60,
        daily: int = 5000,
        minute_seconds: float = 60.0,
        day_seconds: float = 86_400.0,
        realistic_429_headers: bool = False,
    ):
        self.minutely, self.daily = minutely, daily
        self.minute_seconds, self.day_seconds = minute_seconds, day_seconds
        # Exact drops the other limit's headers on a 429 (picqer#646); off by default for clarity.
        self.realistic_429_headers = realistic_429_headers
        self._minute: dict[tuple[str, int], _Window] = {}
        self._day: dict[tuple[str, int], _Window] = {}
        self.refused = {"minutely": 0, "daily": 0}

    @staticmethod
    def _window(table: dict, key: tuple[str, int], length: float, now: float) -> _Window:
        start = now - (now % length)
        window = table.get(key)
        if window is None or window.start != start:
            window = table[key] = _Window(start)
        return window

    def count(self, client_id: str, division: int, now: float | None = None) -> Verdict:
        """Count one division-scoped call and return whether it may proceed, with the six headers."""
        now = time.time() if now is None else now
        key = (client_id, division)
        minute = self._window(self._minute, key, self.minute_seconds, now)
        day = self._window(self._day, key, self.day_seconds, now)
        exceeded = "daily" if day.used >= self.daily else "minutely" if minute.used >= self.minutely else None
        if exceeded is None:
            minute.used += 1
            day.used += 1
        else:
            self.refused[exceeded] += 1
        daily_headers = {
            "X-RateLimit-Limit": str(self.daily),
            "X-RateLimit-Remaining": str(max(self.daily - day.used, 0)),
            "X-RateLimit-Reset": str(int((day.start + self.day_seconds) * 1000)),
        }
        minutely_headers = {
            "X-RateLimit-Minutely-Limit": str(self.minutely),
            "X-RateLimit-Minutely-Remaining": str(max(self.minutely - minute.used, 0)),
            "X-RateLimit-Minutely-Reset": str(int((minute.start + self.minute_seconds) * 1000)),
        }
        if exceeded and self.realistic_429_headers:
            headers = minutely_headers if exceeded == "minutely" else daily_headers
        else:
            headers = {**daily_headers, **minutely_headers}
        return Verdict(exceeded is None, exceeded, headers)

    def reset(self) -> None:
        self._minute.clear()
        self._day.clear()
