"""Prometheus metrics in the text exposition format, without a client library.

Process counters (SOAP calls, latency) live in memory per replica, as Prometheus expects; queue
gauges are read from the store at scrape time so every replica reports the same queue. A scrape
needs a read token, and series labelled with a company the token may not read are left out.
"""

from __future__ import annotations

import threading
from collections import defaultdict

__all__ = ["JOBS_ENQUEUED", "SOAP_CALLS", "SOAP_SECONDS", "render"]

_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return "{" + inner + "}"


def _visible(labels: dict[str, str], companies: frozenset[str] | None) -> bool:
    """A series without a company label is for everyone; one with it only for readers of that company."""
    return companies is None or "company" not in labels or labels["company"] in companies


class Counter:
    def __init__(self, name: str, help_text: str):
        self.name, self.help = name, help_text
        self._values: dict[tuple, float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] += amount

    def lines(self, companies: frozenset[str] | None = None) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            out += [
                f"{self.name}{_labels(dict(k))} {v}"
                for k, v in sorted(self._values.items())
                if _visible(dict(k), companies)
            ]
        return out


class Histogram:
    def __init__(self, name: str, help_text: str):
        self.name, self.help = name, help_text
        self._data: dict[tuple, list[float]] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            row = self._data.setdefault(key, [0.0] * (len(_BUCKETS) + 2))
            for i, bound in enumerate(_BUCKETS):
                if value <= bound:
                    row[i] += 1
            row[-2] += 1  # count
            row[-1] += value  # sum

    def lines(self, companies: frozenset[str] | None = None) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for key, row in sorted(self._data.items()):
                labels = dict(key)
                for i, bound in enumerate(_BUCKETS):
                    out.append(f"{self.name}_bucket{_labels({**labels, 'le': str(bound)})} {row[i]}")
                out.append(f"{self.name}_bucket{_labels({**labels, 'le': '+Inf'})} {row[-2]}")
                out.append(f"{self.name}_count{_labels(labels)} {row[-2]}")
                out.append(f"{self.name}_sum{_labels(labels)} {row[-1]}")
        return out


SOAP_CALLS = Counter("qbwc_bridge_soap_calls_total", "Web Connector SOAP calls by method and outcome.")
SOAP_SECONDS = Histogram("qbwc_bridge_soap_call_seconds", "Time to answer a Web Connector SOAP call.")
JOBS_ENQUEUED = Counter("qbwc_bridge_jobs_enqueued_total", "Jobs accepted by the jobs API.")


def render(
    gauges: list[tuple[str, str, dict[str, str], float]], *, companies: frozenset[str] | None = None
) -> str:
    """All metrics as Prometheus text; `gauges` are (name, help, labels, value) read from the store.

    `companies`: the scrape token's companies (None = all); other companies' series are left out.
    """
    lines: list[str] = []
    for metric in (SOAP_CALLS, SOAP_SECONDS, JOBS_ENQUEUED):
        lines += metric.lines(companies)
    seen: set[str] = set()
    for name, help_text, labels, value in gauges:
        if name not in seen:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            seen.add(name)
        lines.append(f"{name}{_labels(labels)} {value}")
    return "\n".join(lines) + "\n"
