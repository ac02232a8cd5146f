"""Benchmark the QuickBooks adapter end to end: bridge over HTTP, Web Connector simulator, company file.

Creates N customers with their Salesforce Id DataExt in one `upsert` call, finds them all again by
DataExt (a full scan, the only way QuickBooks allows), modifies them all, and reports wall time, bridge
jobs and Web Connector exchanges per step. Run by hand: `.venv/bin/python bench/bench_quickbooks_adapter.py 1000`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ERPSYNC_QBXML_SCHEMA_DIR", str(ROOT.parent / "shared" / "reference" / "qbxml"))


def main(n: int) -> dict:
    import pandas as pd

    from erpsync.adapters.quickbooks import QuickBooksAdapter
    from tests.qb_live import live_quickbooks

    identity = "dataext.SalesforceId"
    out: dict = {"customers": n}
    with live_quickbooks(Path(tempfile.mkdtemp(prefix="bench-qb-")), every=0.05) as live:
        os.environ["AIRFLOW_CONN_QBWC_BRIDGE_BENCH"] = live.connection_json()
        qb = QuickBooksAdapter("qbwc_bridge_bench", idempotency_prefix="bench", long_poll=5)
        rows = pd.DataFrame(
            [
                {
                    "_source_key": f"001B{i:014d}",
                    "Name": f"Bench Customer {i}",
                    "BillAddress.City": "Utrecht",
                    identity: f"001B{i:014d}",
                }
                for i in range(n)
            ]
        )

        def step(name, fn):
            docs = len(live.documents)
            started = time.perf_counter()
            result = fn()
            out[name] = {
                "seconds": round(time.perf_counter() - started, 2),
                "exchanges": len(live.documents) - docs,
            }
            return result

        res = step("create", lambda: qb.upsert("Customer", rows, identity=identity))
        assert (res["action"] == "created").all(), res[res["action"] != "created"].head()
        found = step(
            "read_by_dataext", lambda: qb.read_by_keys("Customer", identity, rows[identity].tolist())
        )
        assert len(found) == n
        mods = rows.assign(_target_id=res["target_id"].to_numpy(), **{"BillAddress.City": "Delft"})
        res = step("modify", lambda: qb.upsert("Customer", mods, identity=identity))
        assert (res["action"] == "updated").all()
        out["jobs"] = len(qb.job_ids)
    return out


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000), indent=2))
