"""Benchmark: upsert N Accounts (or Product2) one record per call vs sObject Collections (200) vs Bulk API 2.0.

All three run in the same process against the same simulator over real HTTPS, through the real
SalesforceHook, so the ratios compare like with like. Each mode upserts its own key range (all inserts),
then the collections and bulk modes run a second time over the same keys (all updates).

    .venv/bin/python bench/bench_salesforce.py                      # 5,000 records, no added latency
    .venv/bin/python bench/bench_salesforce.py --latency-ms 150 --baseline-sample 200

With ``--baseline-sample`` the one-per-call baseline is measured on that many records and its time and
calls are extrapolated linearly to N (labelled as such); everything else is measured in full.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _hook(sandbox, conn_id: str, **extra):
    from erpsync.hooks.salesforce import SalesforceHook

    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = sandbox.connection_json(
        "password", retry_base_delay=0.05, bulk_poll_interval=0.1, **extra
    )
    return SalesforceHook(conn_id)


#: What each benchmarked object is keyed on and how a record looks (Product2 is the Exact items flow).
SHAPES = {
    "Account": (
        "External_Id__c",
        lambda i: {
            "Name": f"Bench Account {i} B.V.",
            "BillingCity": "Utrecht",
            "BillingCountry": "Netherlands",
            "Type": "Customer - Direct",
            "NumberOfEmployees": i % 500,
        },
    ),
    "Product2": (
        "SKU__c",
        lambda i: {
            "Name": f"Bench item {i}",
            "ProductCode": f"B{i:05d}",
            "IsActive": True,
            "Family": "Hardware",
            "Description": "Imported from Exact Online",
        },
    ),
}


def _records(sobject: str, prefix: str, n: int) -> list[dict]:
    key, make = SHAPES[sobject]
    return [{key: f"{prefix}-{i:05d}", **make(i)} for i in range(n)]


def _api_calls(sandbox) -> tuple[int, int]:
    """Return (all API calls, write calls) the simulator has counted so far."""
    calls = sandbox.admin("GET", "stats")["calls"]
    writes = sum(n for key, n in calls.items() if key.split()[0] in ("POST", "PATCH", "PUT", "DELETE"))
    return sum(calls.values()), writes


def _diff(now: tuple[int, int], before: tuple[int, int]) -> tuple[int, int]:
    return now[0] - before[0], now[1] - before[1]


def run(n: int, latency_ms: float, baseline_sample: int | None, sobject: str = "Account") -> dict:
    from erpsync.sandbox.salesforce.testing import running_salesforce

    key = SHAPES[sobject][0]
    out: dict = {"object": sobject, "records": n, "latency_ms": latency_ms, "modes": {}}
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_salesforce(Path(tmp), seed=False, bulk_processing_seconds=0.5) as sandbox,
    ):
        sandbox.admin("POST", "faults", {"latency_ms": latency_ms})

        # 1. one record per call (PATCH sobjects/{object}/{key field}/{key})
        hook = _hook(sandbox, "bench_single")
        hook.describe(sobject)  # log in and warm up outside the timed part, as every mode does
        sample = min(n, baseline_sample or n)
        records = _records(sobject, "single", sample)
        calls0, t0 = _api_calls(sandbox), time.perf_counter()
        ok = 0
        for rec in records:
            body = {k: v for k, v in rec.items() if k != key}
            answer = hook.request("PATCH", f"sobjects/{sobject}/{key}/{rec[key]}", json=body)
            ok += bool(answer and answer.get("success"))
        wall, (calls, writes) = time.perf_counter() - t0, _diff(_api_calls(sandbox), calls0)
        scale = n / sample
        out["modes"]["single"] = {
            "wall_s": wall * scale,
            "calls": round(calls * scale),
            "write_calls": round(writes * scale),
            "ok": ok,
            "extrapolated_from": sample if sample < n else None,
        }

        # 2. sObject Collections, 200 per call; 3. Bulk API 2.0 (one job)
        for mode in ("collections", "bulk"):
            hook = _hook(sandbox, f"bench_{mode}")
            hook.describe(sobject)
            for phase in ("insert", "update"):
                records = _records(sobject, mode, n)
                if phase == "update":
                    for r in records:
                        r["Name"] += " (updated)"
                calls0, t0 = _api_calls(sandbox), time.perf_counter()
                results = hook.upsert(sobject, key, records, mode=mode)
                wall, (calls, writes) = time.perf_counter() - t0, _diff(_api_calls(sandbox), calls0)
                created = sum(bool(r.created) for r in results)
                out["modes"][f"{mode}_{phase}"] = {
                    "wall_s": wall,
                    "calls": calls,
                    "write_calls": writes,
                    "ok": sum(r.success for r in results),
                    "created": created,
                }
        base = out["modes"]["single"]
        for m in out["modes"].values():
            m["speedup_vs_single"] = round(base["wall_s"] / m["wall_s"], 1) if m["wall_s"] else None
            m["call_ratio_vs_single"] = round(base["calls"] / m["calls"], 1) if m["calls"] else None
            m["wall_s"] = round(m["wall_s"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--object", choices=sorted(SHAPES), default="Account", help="what to upsert")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulated latency added to every call")
    parser.add_argument(
        "--baseline-sample",
        type=int,
        default=None,
        help="measure the one-per-call baseline on this many records and extrapolate",
    )
    args = parser.parse_args(argv)
    result = run(args.records, args.latency_ms, args.baseline_sample, args.object)
    print(
        f"Upsert {result['records']} {result['object']} records, {result['latency_ms']:.0f} ms added latency per call"
    )
    print(
        f"{'mode':<20}{'calls':>8}{'writes':>8}{'wall s':>10}{'ok':>7}{'x faster':>10}{'x fewer calls':>15}"
    )
    for name, m in result["modes"].items():
        note = f"  (extrapolated from {m['extrapolated_from']})" if m.get("extrapolated_from") else ""
        print(
            f"{name:<20}{m['calls']:>8}{m['write_calls']:>8}{m['wall_s']:>10}{m['ok']:>7}{m['speedup_vs_single']:>10}"
            f"{m['call_ratio_vs_single']:>15}{note}"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
