"""Benchmark the bridge: N CustomerAdd through bridge + Web Connector simulator + company file.

    .venv/bin/python bench/bench_bridge.py --n 1000               # batched (100) vs one per exchange
    .venv/bin/python bench/bench_bridge.py --n 10000 --batch 100
    .venv/bin/python bench/bench_bridge.py --companies 50 --n 40  # 50 company files polling at once

Both modes run in the same process, on fresh SQLite stores and fresh company files, so the ratio
compares like with like. Times are wall-clock; "SOAP call" times are measured by the client (HTTP
round trip included), "bridge" times by the bridge around its own handler (no QuickBooks time).
"""

from __future__ import annotations

import argparse
import math
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from erpsync.qbwc_bridge import metrics
from erpsync.sandbox.quickbooks import CompanyFile
from erpsync.sandbox.runner import SandboxCA, SandboxContext
from erpsync.sandbox.webconnector import WebConnectorSimulator, start_bridge

TOKEN = secrets.token_urlsafe(32)  # a real-looking secret: weak static tokens are refused


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _enqueue(url: str, company: str, requests: list[str], chunk: int = 5000) -> list[str]:
    ids = []
    for start in range(0, len(requests), chunk):
        resp = httpx.post(
            f"{url}/api/v1/jobs",
            json={"company": company, "requests": requests[start : start + chunk]},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=600,
        )
        resp.raise_for_status()
        ids.append(resp.json()["id"])
    return ids


def _bridge_seconds() -> dict[str, list[float]]:
    """Per-call handler time of the bridge, from its own histogram (sum/count per method)."""
    return {dict(k).get("method"): [row[-1], row[-2]] for k, row in metrics.SOAP_SECONDS._data.items()}


def run_one(n: int, batch: int, workdir: Path, tag: str) -> dict:
    ctx = SandboxContext(data_dir=workdir / tag, ca=SandboxCA(workdir / "ca"))
    ctx.data_dir.mkdir(parents=True)
    bridge = start_bridge(
        ctx,
        companies={"acme": "pw"},
        api_token=TOKEN,
        max_batch_requests=batch,
        max_queued_requests=max(100_000, n),
        max_requests_per_job=max(10_000, n),
    )
    qb = CompanyFile(ctx.data_dir / "company.sqlite")
    try:
        # The process's first login of the user pays scrypt (~0.4 s at N=2^17; later logins hit the
        # in-memory HMAC of the verified password): a Web Connector poll with nothing queued pays it
        # here, untimed in the ratio but reported, in both modes alike.
        t0 = time.perf_counter()
        WebConnectorSimulator(bridge.soap_url, "acme", "pw", qb).run_once()
        first_login_s = time.perf_counter() - t0
        requests = [
            f"<CustomerAddRq><CustomerAdd><Name>Bench {tag} {i:06d}</Name></CustomerAdd></CustomerAddRq>"
            for i in range(n)
        ]
        t0 = time.perf_counter()
        job_ids = _enqueue(bridge.url, "acme", requests)
        enqueue_s = time.perf_counter() - t0
        metrics.SOAP_SECONDS._data.clear()
        sim = WebConnectorSimulator(bridge.soap_url, "acme", "pw", qb, max_exchanges=10**7)
        t1 = time.perf_counter()
        report = sim.run_once()
        session_s = time.perf_counter() - t1
        sim.close()
        per_exchange = [
            a[1] + b[1]
            for a, b in zip(
                [t for t in report.timings if t[0] == "sendRequestXML"],
                [t for t in report.timings if t[0] == "receiveResponseXML"],
                strict=False,
            )
        ]
        states = {
            httpx.get(
                f"{bridge.url}/api/v1/jobs/{j}?results=false", headers={"Authorization": f"Bearer {TOKEN}"}
            ).json()["state"]
            for j in job_ids
        }
        return {
            "batch": batch,
            "exchanges": report.exchanges,
            "expected_exchanges": math.ceil(n / batch),
            "first_login_s": round(first_login_s, 3),
            "enqueue_s": enqueue_s,
            "session_s": session_s,
            "total_s": enqueue_s + session_s,
            "exchange_p95_ms": _pct(per_exchange, 0.95) * 1000,
            "status": report.status,
            "job_states": sorted(states),
            "customers": qb.count("Customer") if hasattr(qb, "count") else None,
        }
    finally:
        bridge.stop()
        qb.close()


def bridge_time_per_exchange(n: int, batch: int, workdir: Path, synchronous: str = "FULL") -> dict:
    """Bridge-side handler time per exchange (send + receive), QuickBooks time excluded.

    `synchronous`: the SQLite store's PRAGMA (the bridge uses FULL; NORMAL measures what FULL costs).
    """
    from erpsync.qbwc_bridge import db

    ctx = SandboxContext(
        data_dir=workdir / f"bt-{synchronous}-{time.monotonic_ns()}", ca=SandboxCA(workdir / "ca")
    )
    ctx.data_dir.mkdir(parents=True)
    db.SQLITE_SYNCHRONOUS = synchronous
    try:
        bridge = start_bridge(ctx, companies={"acme": "pw"}, api_token=TOKEN, max_batch_requests=batch)
    finally:
        db.SQLITE_SYNCHRONOUS = "FULL"
    qb = CompanyFile(ctx.data_dir / "company.sqlite")
    samples: list[float] = []
    cpu_samples: list[float] = []  # CPU time of the handling thread: what the bridge itself costs
    try:
        _enqueue(
            bridge.url,
            "acme",
            [
                f"<CustomerAddRq><CustomerAdd><Name>Bt {i:06d}</Name></CustomerAdd></CustomerAddRq>"
                for i in range(n)
            ],
        )
        conversation = bridge.app.state.bridge.conversation
        original_send, original_recv = conversation.send_request_xml, conversation.receive_response_xml
        current = {}

        def send(*args):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return original_send(*args)
            finally:
                current["send"] = (time.perf_counter() - t, time.thread_time() - c)

        def recv(*args):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return original_recv(*args)
            finally:
                wall, cpu = current.pop("send", (0.0, 0.0))
                samples.append(wall + time.perf_counter() - t)
                cpu_samples.append(cpu + time.thread_time() - c)

        conversation.send_request_xml, conversation.receive_response_xml = send, recv
        WebConnectorSimulator(bridge.soap_url, "acme", "pw", qb, max_exchanges=10**7).run_once()
    finally:
        bridge.stop()
        qb.close()
    return {
        "exchanges": len(samples),
        "wall_p50_ms": round(_pct(samples, 0.5) * 1000, 1),
        "wall_p95_ms": round(_pct(samples, 0.95) * 1000, 1),
        "cpu_p50_ms": round(_pct(cpu_samples, 0.5) * 1000, 1),
        "cpu_p95_ms": round(_pct(cpu_samples, 0.95) * 1000, 1),
    }


def compare_synchronous(rounds: int, n: int, batch: int, workdir: Path) -> int:
    """Bridge time per exchange with SQLite synchronous NORMAL (the baseline) and FULL, alternating
    so both see the same machine load; prints each round and the pooled p50/p95 of each."""
    pooled: dict[str, list[dict]] = {"NORMAL": [], "FULL": []}
    bridge_time_per_exchange(min(n, 200), batch, workdir)  # warm-up: imports, statement compilation
    for r in range(rounds):
        for mode in ("NORMAL", "FULL") if r % 2 == 0 else ("FULL", "NORMAL"):
            result = bridge_time_per_exchange(n, batch, workdir, synchronous=mode)
            pooled[mode].append(result)
            print(f"round {r + 1} synchronous={mode}: {result}", flush=True)
    for mode, results in pooled.items():
        p50 = sorted(x["wall_p50_ms"] for x in results)
        p95 = sorted(x["wall_p95_ms"] for x in results)
        print(
            f"synchronous={mode}: wall p50 {p50[0]}-{p50[-1]} ms (median {p50[len(p50) // 2]}), "
            f"p95 {p95[0]}-{p95[-1]} ms (median {p95[len(p95) // 2]})"
        )
    return 0


def _serve_subprocess(db_url: str, port: int):
    """The bridge in its own process, so the 50 simulated clients do not share its interpreter lock."""
    import os
    import subprocess

    env = {
        **os.environ,
        "QBWC_BRIDGE_DATABASE_URL": db_url,
        "QBWC_BRIDGE_API_TOKEN": TOKEN,
        "QBWC_BRIDGE_ENVIRONMENT": "development",
        "QBWC_BRIDGE_MAX_BATCH_REQUESTS": "20",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erpsync.qbwc_bridge.cli",
            "serve",
            "--port",
            str(port),
            "--migrate",
            "--log-level",
            "warning",
        ],
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("bridge did not start")


def _buckets(metrics_text: str) -> dict[float, float]:
    buckets: dict[float, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("qbwc_bridge_soap_call_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def _server_quantile(after: str, q: float, before: str = "") -> float:
    """Upper bucket bound holding quantile q of the SOAP calls between two /metrics scrapes."""
    old = _buckets(before)
    buckets = {bound: count - old.get(bound, 0.0) for bound, count in _buckets(after).items()}
    total = buckets.get(float("inf"), 0.0)
    for bound in sorted(buckets):
        if total and buckets[bound] >= q * total:
            return bound
    return float("nan")


def many_companies(companies: int, n: int, workdir: Path, db_url: str | None = None) -> dict:
    import socket

    from erpsync.qbwc_bridge.crud import add_company
    from erpsync.qbwc_bridge.db import Store, migrate

    db_url = db_url or f"sqlite:///{workdir / 'many.db'}"
    migrate(db_url)
    names = {f"co{i:02d}": f"pw{i}" for i in range(companies)}
    store = Store(db_url)
    with store.session() as s:
        for name, password in names.items():
            add_company(session=s, name=name, password=password)
    store.dispose()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = _serve_subprocess(db_url, port)
    url = f"http://127.0.0.1:{port}"
    files = {name: CompanyFile(workdir / f"{name}.sqlite") for name in names}
    reports = {}
    try:
        for name in names:
            _enqueue(
                url,
                name,
                [
                    f"<CustomerAddRq><CustomerAdd><Name>{name} cust {i:04d}</Name></CustomerAdd></CustomerAddRq>"
                    for i in range(n)
                ],
            )

        # Cold round first (each user's first authenticate pays scrypt), measured on its own.
        def poll(name: str):
            warm = WebConnectorSimulator(f"{url}/qbwc", name, names[name], files[name])
            cold_reports[name] = warm.run_once()
            warm.close()

        cold_reports: dict = {}
        pollers = [threading.Thread(target=poll, args=(name,)) for name in names]
        for t in pollers:
            t.start()
        for t in pollers:
            t.join()
        cold_calls = [s for r in cold_reports.values() for m, s in r.timings]
        for name in names:
            _enqueue(
                url,
                name,
                [
                    f"<CustomerAddRq><CustomerAdd><Name>{name} cust {i:04d}</Name></CustomerAdd></CustomerAddRq>"
                    for i in range(n)
                ],
            )
        # Connection set-up is the client's cost, not the bridge's: httpx builds an SSL context per
        # client (~20 ms of CPU each, 50 of them queued behind this process's GIL), which used to land
        # in each session's first timed call. One untimed call per client opens its connection first.
        sims = {name: WebConnectorSimulator(f"{url}/qbwc", name, names[name], files[name]) for name in names}
        for sim in sims.values():
            sim.call("serverVersion")
        before = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
        barrier = threading.Barrier(companies)

        def run(name: str):
            barrier.wait()
            reports[name] = sims[name].run_once()
            sims[name].close()

        threads = [threading.Thread(target=run, args=(name,)) for name in names]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        calls = [s for r in reports.values() for _, s in r.timings]
        text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
        cross_talk = 0
        for name, qb in files.items():
            cross_talk += sum(
                1 for row in qb.records("Customer") if not str(row.get("Name", "")).startswith(name)
            )
        return {
            "companies": companies,
            "database": db_url.split(":", 1)[0],
            "sessions_ok": sum(1 for r in reports.values() if r.status == "ok"),
            "wall_s": round(wall, 2),
            "soap_calls": len(calls),
            "client_p50_ms": round(_pct(calls, 0.5) * 1000, 1),
            "client_p99_ms": round(_pct(calls, 0.99) * 1000, 1),
            "bridge_p50_le_ms": _server_quantile(text, 0.5, before) * 1000,
            "bridge_p99_le_ms": _server_quantile(text, 0.99, before) * 1000,
            "cold_round_client_p99_ms": round(_pct(cold_calls, 0.99) * 1000, 1),
            "cross_talk_records": cross_talk,
            "customers_per_file": sorted({len(qb.records("Customer")) for qb in files.values()}),
        }
    finally:
        proc.terminate()
        proc.wait(20)
        for qb in files.values():
            qb.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--companies", type=int, default=0, help="also run N company files polling at once")
    parser.add_argument("--per-company", type=int, default=40)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--only-companies", action="store_true", help="run only the many-companies part")
    parser.add_argument("--only-bridge-time", action="store_true", help="run only the per-exchange timing")
    parser.add_argument("--database-url", help="PostgreSQL URL for the many-companies part (default SQLite)")
    parser.add_argument(
        "--compare-synchronous",
        type=int,
        metavar="ROUNDS",
        default=0,
        help="only the per-exchange timing, NORMAL vs FULL (the bridge's) alternating for ROUNDS rounds",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        work = Path(tmp)
        if args.compare_synchronous:
            return compare_synchronous(args.compare_synchronous, args.n, args.batch, work)
        if args.only_bridge_time:
            print(
                f"bridge time per {args.batch}-request exchange on SQLite: "
                f"{bridge_time_per_exchange(args.n, args.batch, work)}"
            )
            return 0
        if args.only_companies:
            print(
                f"{args.companies} companies at once: {many_companies(args.companies, args.per_company, work, args.database_url)}"
            )
            return 0
        # Not reported: pays this process's lazy imports and first statement compilations, which
        # would otherwise all land on whichever mode runs first.
        run_one(min(args.n, 200), args.batch, work, "warmup")
        batched = run_one(args.n, args.batch, work, "batched")
        print(f"batched  (batch {args.batch}): {batched}", flush=True)
        if not args.skip_baseline:
            single = run_one(args.n, 1, work, "single")
            print(f"baseline (batch 1):   {single}", flush=True)
            ratio = single["session_s"] / batched["session_s"]
            ratio_total = single["total_s"] / batched["total_s"]
            print(
                f"N={args.n}: exchanges {batched['exchanges']} vs {single['exchanges']} "
                f"(expected ceil(N/batch) = {batched['expected_exchanges']}); "
                f"session {batched['session_s']:.2f} s vs {single['session_s']:.2f} s; "
                f"ratio {ratio:.1f}x (end to end incl. enqueue {ratio_total:.1f}x)"
            )
        bt = bridge_time_per_exchange(min(args.n, 2000), args.batch, work)
        print(f"bridge time per {args.batch}-request exchange on SQLite: {bt}")
        if args.companies:
            print(
                f"{args.companies} companies at once: {many_companies(args.companies, args.per_company, work)}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
