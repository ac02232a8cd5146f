"""Overhead of a quality task: Great Expectations imported in every task process vs once per worker.

Each "task" is a process that runs `erpsync.quality.run_checks` on the same 200-row chunk with the
products flow's source rules, twice: the first call pays the overhead (GX import + ephemeral context),
the second only the checks, so overhead = first - second.

- baseline (before): a fresh interpreter per task, GX imported inside the task (what every quality
  task did);
- preloaded (after): the bench process imports what `erpsync.quality.preload.warm()` imports, as the
  demo's scheduler does, then forks each task (the LocalExecutor forks its task processes from workers
  the scheduler forked).

Both in the same run, alternating, so machine load hits both alike. Prints medians and the ratio.

    .venv/bin/python bench/bench_quality_overhead.py [--tasks 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, time
import pandas as pd
from erpsync.quality import run_checks
rules = [
    {"rule": "not_null", "column": "Code"},
    {"rule": "not_null", "column": "Description"},
    {"rule": "unique", "column": "Code"},
    {"rule": "length_between", "column": "Code", "min": 1, "max": 30},
]
df = pd.DataFrame({"ID": [f"id{i}" for i in range(200)], "Code": [f"C{i}" for i in range(200)],
                   "Description": ["x" if i % 50 else "" for i in range(200)]})
t0 = time.perf_counter(); r1 = run_checks(df, rules, key_column="ID", suite_name="bench.source")
t1 = time.perf_counter(); r2 = run_checks(df, rules, key_column="ID", suite_name="bench.source")
t2 = time.perf_counter()
assert r1.bad_count == r2.bad_count == 4, r1.failed_by_rule
print(json.dumps({"first": t1 - t0, "second": t2 - t1}))
"""


def cold_task() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GX_ANALYTICS_ENABLED": "false"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def forked_task() -> dict:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the task process
        os.close(read)
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(CHILD, "<task>", "exec"), {"__name__": "__task__"})
        os.write(write, buf.getvalue().strip().splitlines()[-1].encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"forked task failed ({status})"
    return json.loads(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5)
    args = parser.parse_args()
    from erpsync.quality.preload import warm

    load = os.getloadavg()[0]
    started = time.perf_counter()
    warm_seconds = warm()  # once, in the "scheduler"
    cold, warm_ = [], []
    for _ in range(args.tasks):
        cold.append(cold_task())
        warm_.append(forked_task())
    over_cold = statistics.median(t["first"] - t["second"] for t in cold)
    over_warm = statistics.median(t["first"] - t["second"] for t in warm_)
    first_cold = statistics.median(t["first"] for t in cold)
    first_warm = statistics.median(t["first"] for t in warm_)
    print(f"load average at start {load:.1f}; preload in the parent: {warm_seconds:.2f} s (once)")
    print(
        f"{'per quality task (median of ' + str(args.tasks) + ')':40} {'baseline':>9} {'preloaded':>9} {'ratio':>7}"
    )
    print(
        f"{'overhead (first call - second call)':40} {over_cold:9.2f} {over_warm:9.2f} {over_cold / max(over_warm, 1e-3):6.1f}x"
    )
    print(f"{'first run_checks call':40} {first_cold:9.2f} {first_warm:9.2f} {first_cold / first_warm:6.1f}x")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
