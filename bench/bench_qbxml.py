"""Benchmark the qbXML library and the QuickBooks simulator (run by hand, not by pytest).

    .venv/bin/python bench/bench_qbxml.py [N]

Reports, for N CustomerAdd requests: build time, envelope + simulator time in batches of 100 versus
one request per document (the ratio is measured in the same run), response parse time, and the XSD
compile time. Set ERPSYNC_QBXML_SCHEMA_DIR to include XSD validation (as the tests do).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault(
    "ERPSYNC_QBXML_SCHEMA_DIR", str(Path(__file__).resolve().parents[2] / "shared/reference/qbxml")
)

from erpsync.qbwc_bridge import qbxml as q
from erpsync.qbwc_bridge.qbxml.validate import load_schema, schema_load_seconds
from erpsync.sandbox.quickbooks import CompanyFile


def main(n: int = 2000) -> None:
    load_schema()
    print(f"XSD compile: {schema_load_seconds():.3f} s")
    started = time.perf_counter()
    requests = [
        q.customer_add(
            {"Name": f"Bench {i}", "CompanyName": "Bench", "BillAddress": {"City": "X"}}, request_id=f"b{i}"
        )
        for i in range(n)
    ]
    built = time.perf_counter() - started
    print(f"build+validate {n} CustomerAdd: {built:.3f} s ({built / n * 1e6:.0f} us each)")
    timings: dict[int, float] = {}
    for batch in (100, 1):
        company = CompanyFile(None)
        started = time.perf_counter()
        answers = [company.process(q.envelope(requests[i : i + batch])) for i in range(0, n, batch)]
        took = time.perf_counter() - started
        parse_started = time.perf_counter()
        for answer in answers:
            q.parse_response(answer)
        parsed = time.perf_counter() - parse_started
        print(f"batch {batch:>3}: {len(answers)} documents, simulator {took:.3f} s, parse {parsed:.3f} s")
        timings[batch] = took + parsed
        company.close()
    print(f"batched / one-per-document time ratio (same run): {timings[100] / timings[1]:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
