"""Benchmark: read 5,000 Exact items through the regular endpoint (60/page) versus bulk and sync (1,000/page).

    .venv/bin/python bench/bench_exact.py                       # 150 ms latency per call, limits off
    .venv/bin/python bench/bench_exact.py --realistic-limits    # Exact's 60 calls/min per division

Both runs use the real ExactOnlineHook against the simulator over a real socket, in the same process
and the same run, so the ratio compares like with like. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _measure(hook, label: str, read) -> dict:
    calls_before, started = hook.calls, time.perf_counter()
    rows = read()
    seconds = time.perf_counter() - started
    return {
        "path": label,
        "rows": rows,
        "calls": hook.calls - calls_before,
        "seconds": round(seconds, 2),
        "waited_for_rate_limit_s": round(sum(s.waited_seconds for s in hook.limits.values()), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.15, help="simulated seconds per call")
    parser.add_argument(
        "--realistic-limits", action="store_true", help="60 calls/min, 5,000/day per division"
    )
    args = parser.parse_args(argv)

    from erpsync.sandbox.exact.testing import running_exact

    limits = {} if args.realistic_limits else {"minutely_limit": 1_000_000, "daily_limit": 1_000_000}
    select = "ID,Code,Description,Unit,SalesVatCode,StandardSalesPrice"
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_exact(Path(tmp), item_count=args.items, latency=args.latency, **limits) as exact,
    ):
        os.environ["AIRFLOW_CONN_EXACT_ONLINE_DEFAULT"] = exact.connection_json(max_rate_limit_wait=120)
        from erpsync.hooks.exact_online import ExactOnlineHook

        results = []
        for label, read in [
            (
                "regular logistics/Items (60/page)",
                lambda h: sum(len(p) for p in h.iter_pages("logistics/Items", select=select)),
            ),
            (
                "bulk/Logistics/Items (1,000/page)",
                lambda h: sum(len(p) for p in h.iter_bulk("logistics/Items", select)),
            ),
            (
                "sync/Logistics/Items (1,000/page)",
                lambda h: sum(len(rows) for rows, _ in h.iter_sync("logistics/Items", select)),
            ),
        ]:
            hook = ExactOnlineHook()
            _ = hook.division  # resolve the division first: one call, not part of the read
            results.append(_measure(hook, label, lambda h=hook, r=read: r(h)))
            hook.close()
    base = results[0]
    for r in results[1:]:
        r["calls_ratio_vs_regular"] = round(base["calls"] / max(r["calls"], 1), 1)
        r["speedup_vs_regular"] = round(base["seconds"] / max(r["seconds"], 1e-9), 1)
    report = {
        "items": args.items,
        "latency_per_call_s": args.latency,
        "rate_limits": "exact (60/min, 5000/day)" if args.realistic_limits else "off",
        "results": results,
    }
    print(json.dumps(report, indent=2))
    ok = (
        all(r["rows"] == args.items for r in results)
        and results[1]["calls"] <= 5
        and results[2]["calls"] <= 5
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
