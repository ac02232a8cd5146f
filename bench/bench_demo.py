"""`make demo` timing: a first run from an empty folder, then an unchanged rerun, with the task time of
every flow's run from Airflow's task instance durations.

    .venv/bin/python bench/bench_demo.py --dir /tmp/demo-bench          # runs the demo twice
    .venv/bin/python bench/bench_demo.py --report DB SUMMARY.json       # figures of a finished demo

Per flow: the run's wall time, its task time (sum of the task instances' durations), the quality
tasks' share, and the runs Airflow started besides the demo's own (scheduled, asset-triggered).
Per run of the demo: its own "all flows succeeded in N s". Also the Great Expectations overhead each
quality task logged ("Great Expectations ready in ...", see erpsync.quality._checks).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
GX_READY = re.compile(r"Great Expectations ready in ([0-9.]+) s")


def report(db: Path, summary_path: Path, logs: Path | None = None) -> dict:
    summary = json.loads(summary_path.read_text())
    out = {"demo_seconds": summary["seconds"], "flows": {}}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        for flow, r in summary["flows"].items():
            tis = con.execute(
                "SELECT task_id, duration FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (flow, r["run_id"]),
            ).fetchall()
            others = con.execute(
                "SELECT run_type, COUNT(*) FROM dag_run WHERE dag_id = ? AND run_id != ? GROUP BY run_type",
                (flow, r["run_id"]),
            ).fetchall()
            task = sum(d or 0 for _, d in tis)
            quality = sum(d or 0 for t, d in tis if t.endswith(".check"))
            out["flows"][flow] = {
                "wall": r["seconds"],
                "task_seconds": round(task, 1),
                "tasks": len(tis),
                "quality_tasks": sum(1 for t, _ in tis if t.endswith(".check")),
                "quality_seconds": round(quality, 1),
                "written": r["created"] + r["updated"],
                "other_runs": dict(others),
            }
    if logs is not None and logs.is_dir():
        ready = [
            float(m.group(1))
            for f in logs.rglob("*.log")
            if "check" in str(f.parent)
            for m in GX_READY.finditer(f.read_text(errors="replace"))
        ]
        out["gx_ready_seconds"] = {
            "n": len(ready),
            "median": round(statistics.median(ready), 2) if ready else None,
        }
    return out


def show(label: str, fig: dict) -> None:
    print(f"\n{label}: demo says all flows done in {fig['demo_seconds']} s")
    print(f"{'flow':30} {'wall':>6} {'tasks':>5} {'task s':>7} {'quality':>8} {'written':>7}  other runs")
    for flow, f in fig["flows"].items():
        print(
            f"{flow:30} {f['wall'] or 0:6.1f} {f['tasks']:5} {f['task_seconds']:7.1f} "
            f"{f['quality_seconds']:5.1f}/{f['quality_tasks']} {f['written']:7}  {f['other_runs']}"
        )
    if "gx_ready_seconds" in fig:
        print(f"GX overhead per quality task (logged): {fig['gx_ready_seconds']}")


def run_demo(folder: Path) -> dict:
    env = {**os.environ, "ERPSYNC_DEMO_DIR": str(folder)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "erpsync.demo"], env=env, cwd=PROJECT, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"the demo failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    fig = report(folder / "airflow" / "airflow.db", folder / "demo-summary.json", folder / "airflow" / "logs")
    fig["process_seconds"] = round(time.monotonic() - started, 1)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="demo folder (emptied first); runs the demo twice")
    parser.add_argument(
        "--report", nargs=2, type=Path, metavar=("DB", "SUMMARY"), help="figures of a finished demo"
    )
    parser.add_argument("--logs", type=Path, help="with --report: the Airflow logs folder")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    if args.report:
        show("report", report(*args.report, args.logs))
        return
    if not args.dir:
        parser.error("--dir or --report")
    shutil.rmtree(args.dir, ignore_errors=True)
    for label in ("first run", "unchanged rerun"):
        fig = run_demo(args.dir)
        show(f"{label} (process {fig['process_seconds']} s, load {os.getloadavg()[0]:.1f})", fig)
        (args.dir.parent / f"bench-demo-{label.split()[0]}.json").write_text(json.dumps(fig, indent=2))


if __name__ == "__main__":
    main()
