"""The Autotask hook's request budget (§8, §12 #1): this package's share of the tenant's hourly threshold.

`BudgetMixin` holds the rules (rule 1 of `erpsync.hooks.autotask`): read ``ThresholdInformation`` and
share the reading through the ledger, estimate the tenant's count, pace from the slowdown share, stop
before the stop share, and reserve each call in the ledger before it is sent so the package's share is
never passed, by one task or by several at once. `AutotaskHook` mixes it in; it needs the hook's
``settings``, ``ledger``, ``budget``, ``_clock``, ``_sleep``, ``_request`` and ``api_calls``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from erpsync.errors import FatalSourceError, RateLimitedError

__all__ = ["DEFAULT_THRESHOLD", "BudgetMixin", "BudgetStatus"]

log = logging.getLogger("erpsync.hooks.autotask")

#: The tenant's requests per rolling hour (§8), assumed until a `ThresholdInformation` reading says otherwise.
DEFAULT_THRESHOLD = 10_000


@dataclass
class BudgetStatus:
    """Where the hook stands against its share and the tenant's threshold (for run reports)."""

    threshold: int | None = None  #: the tenant's requests per rolling hour (`externalRequestThreshold`)
    tenant_count: int | None = None  #: the tenant's count at the last `ThresholdInformation` read
    tenant_read_at: float | None = None  #: None once the reading is dropped (stale, refused, 429)
    last_read_at: float | None = None  #: when the last reading used was taken (kept for reports)
    own_calls_at_read: int = 0  #: this hook's counted calls when the tenant count was read
    total_at_read: int = 0  #: the ledger's count of this package's calls when the tenant count was read
    shared_reads: int = 0  #: readings taken over from another task through the ledger (no call)
    own_hour: int = 0  #: this package's calls in the rolling hour (ledger), at the last check
    own_cap: int | None = None  #: the most this package may use per rolling hour
    waited_seconds: float = 0.0  #: slept for the budget, the tenant's pace and 429s
    slowed_calls: int = 0  #: calls sent after a pacing pause
    rate_limited: int = 0  #: 429 answers received

    def as_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("tenant_read_at", "last_read_at", "own_calls_at_read", "total_at_read")
        }


class BudgetMixin:
    """The budget's methods of `AutotaskHook` (see the module docstring)."""

    def threshold_information(self, *, reserved: bool = False) -> dict[str, Any]:
        """Return `ThresholdInformation` (the tenant's threshold and its count in the current hour).

        :param reserved: the budget already counted this call in the ledger (`_admit`); else it is
            counted once sent (the UI's Test button).
        """
        body = self._request(
            "GET",
            "ThresholdInformation",
            kind="threshold",
            entity="ThresholdInformation",
            budgeted=False,
            reserved=reserved,
        )
        if not isinstance(body, dict) or "currentTimeframeRequestCount" not in body:
            raise FatalSourceError(
                f"ThresholdInformation answered without currentTimeframeRequestCount: {str(body)[:200]}",
                where="ThresholdInformation",
            )
        b = self.budget
        b.threshold = int(body.get("externalRequestThreshold") or 10_000)
        b.tenant_count = int(body["currentTimeframeRequestCount"])
        b.tenant_read_at = b.last_read_at = self._clock()
        b.own_calls_at_read = self.api_calls
        b.total_at_read = self.ledger.total(self.settings.budget_key)
        b.own_cap = int(self.settings.budget_share * b.threshold)
        # The other tasks on the host may use this reading for a short while instead of reading again.
        self.ledger.save_threshold(
            self.settings.budget_key, b.threshold, b.tenant_count, b.tenant_read_at, b.total_at_read
        )
        return body

    def _adopt_shared_reading(self, now: float, total: int) -> bool:
        """Take over another task's fresh `ThresholdInformation` reading from the ledger (no call)."""
        s, b = self.settings, self.budget
        shared = self.ledger.threshold(s.budget_key)
        if shared is None:
            return False
        threshold, tenant_count, read_at, total_at_read = shared
        if not self._reading_fresh(threshold, tenant_count, read_at, total_at_read, now, total):
            return False
        if b.tenant_read_at is not None and read_at <= b.tenant_read_at:
            return False  # not newer than what this hook already found stale
        b.threshold, b.tenant_count, b.tenant_read_at, b.total_at_read = (
            threshold,
            tenant_count,
            read_at,
            total_at_read,
        )
        b.own_calls_at_read = self.api_calls
        b.last_read_at = read_at
        b.own_cap = int(s.budget_share * threshold)
        b.shared_reads += 1
        return True

    def _reading_fresh(
        self, threshold: int, tenant_count: int, read_at: float, total_at_read: int, now: float, total: int
    ) -> bool:
        """Whether a reading still describes the tenant well enough to go on without reading again.

        Our own calls since the reading are counted exactly (the ledger) and added to it; what a reading
        cannot know is the other integrations' calls since, which grow with time. So a reading is used
        for ``threshold_share_ttl`` seconds (60 at most). Near the lines (the estimate at half the
        slowdown share or more) it is also read again every ``threshold_every`` calls of ours; far below
        them (under 35 % of the threshold by default, 5,000 calls from the stop line at 10,000) the
        minute alone bounds what others could add unseen.
        """
        s = self.settings
        if not 0 <= now - read_at < s.threshold_share_ttl:
            return False
        near = tenant_count + (total - total_at_read) >= s.tenant_slowdown_share * threshold / 2
        return not (near and total - total_at_read >= s.threshold_every)

    def _drop_reading(self) -> None:
        """Forget the tenant's count here and in the ledger: the next call, of any task, reads it anew."""
        self.budget.tenant_read_at = None
        self.ledger.forget_threshold(self.settings.budget_key)

    def _own_window(self, now: float) -> list[tuple[int, int]]:
        return self.ledger.window(self.settings.budget_key, now)

    def _admit(self, where: str) -> None:
        """Wait or refuse before a call that would pass the share or bring the tenant near its threshold.

        A `ThresholdInformation` read is a call too: it is sent only when it fits the share (checked
        with the last known threshold), so neither the read nor the call after it ever passes the share.
        """
        s, b = self.settings, self.budget
        while True:
            now = self._clock()
            # This package's calls since the reading, from every task on the host (the ledger's counter).
            total = self.ledger.total(s.budget_key)
            stale = (
                b.tenant_read_at is None
                or b.threshold is None
                or b.tenant_count is None
                or not self._reading_fresh(
                    b.threshold, b.tenant_count, b.tenant_read_at, b.total_at_read, now, total
                )
            )
            if stale and not self._adopt_shared_reading(now, total):
                known = b.threshold or self.ledger.last_threshold(s.budget_key) or DEFAULT_THRESHOLD
                window = self._own_window(now)
                b.own_hour = sum(n for _, n in window)
                cap = int(s.budget_share * known)
                reserved = None if b.own_hour + 1 > cap else self.ledger.reserve(s.budget_key, now, cap)
                if reserved is None:  # no room, or another task took the last of it
                    b.own_hour = max(b.own_hour, cap)
                    self._hold(*self._share_wait(self._own_window(now), cap, known, now), where)
                    continue
                self.threshold_information(reserved=True)
                now = self._clock()
                total = self.ledger.total(s.budget_key)
            assert b.threshold is not None and b.tenant_count is not None and b.own_cap is not None
            window = self._own_window(now)
            b.own_hour = sum(n for _, n in window)
            tenant = b.tenant_count + max(total - b.total_at_read, self.api_calls - b.own_calls_at_read)
            stop = int(s.tenant_stop_share * b.threshold)
            if b.own_hour + 1 > b.own_cap:
                self._hold(*self._share_wait(window, b.own_cap, b.threshold, now), where)
                continue
            if tenant + 1 > stop:
                # ThresholdInformation does not say when old requests leave the window: assume an even spread.
                excess = tenant + 1 - stop
                wait = min(max(excess * 3600 / max(tenant, 1), 60.0), 3600.0)
                reason = (
                    f"the tenant has used {tenant} of its {b.threshold} requests this hour (all integrations); "
                    f"this package stops at {s.tenant_stop_share:.0%} so the tenant never reaches its threshold"
                )
                self._hold(wait, reason, where, tenant=tenant)
                continue
            if tenant >= s.tenant_slowdown_share * b.threshold and s.slowdown_seconds > 0:
                self._pause(s.slowdown_seconds, where, "tenant above the slowdown share")
                b.slowed_calls += 1
                now = self._clock()
            # Check and count in one step of the ledger: tasks at the same moment never pass the share.
            reserved = self.ledger.reserve(s.budget_key, now, b.own_cap)
            if reserved is None:
                continue  # another task took the last room meanwhile: the check above now says how long
            b.own_hour = reserved
            return

    def _share_wait(
        self, window: list[tuple[int, int]], cap: int, threshold: int, now: float
    ) -> tuple[float, str]:
        """How long until this package's rolling hour has room for one more call, and why it waits."""
        b, s = self.budget, self.settings
        # The oldest minutes of the rolling hour free up first.
        excess, freed, wait = b.own_hour + 1 - cap, 0, 3600.0
        for minute, n in window:
            freed += n
            if freed >= excess:
                wait = max((minute + 60) * 60 - now, 1.0)
                break
        return wait, (
            f"this package used {b.own_hour} of its {cap} requests per hour "
            f"({s.budget_share:.0%} of the tenant's {threshold})"
        )

    def _hold(self, wait: float, reason: str, where: str, *, tenant: int | None = None) -> None:
        """Wait `wait` seconds in place when `max_wait` allows, else raise `RateLimitedError`."""
        s, b = self.settings, self.budget
        if b.waited_seconds + wait > s.max_wait:
            self._drop_reading()  # whoever calls again later must see the tenant's count anew
            raise RateLimitedError(
                f"Autotask request budget reached: {reason}; retry in {wait:.0f} s",
                retry_after=wait,
                where=where,
                details={
                    "own_hour": b.own_hour,
                    "own_cap": b.own_cap,
                    "tenant_count": tenant if tenant is not None else b.tenant_count,
                    "threshold": b.threshold,
                },
            )
        log.warning("Autotask budget: %s; waiting %.0f s", reason, wait)
        self._pause(wait, where, reason)
        self._drop_reading()  # read the tenant's count again after the wait

    def _pause(self, seconds: float, where: str, why: str) -> None:
        self.budget.waited_seconds += seconds
        log.debug("Autotask: pausing %.2f s before %s (%s)", seconds, where, why)
        self._sleep(seconds)
