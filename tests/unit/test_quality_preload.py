"""erpsync.quality.preload: only `airflow scheduler` with the LocalExecutor loads GX up front, and a
process forked after that finds GX loaded (what the LocalExecutor's task processes inherit).

Each case runs in a fresh interpreter, so what this pytest process imported does not count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PROBE = r"""
import json, os, sys
from erpsync.quality.preload import warm_local_executor
did = warm_local_executor({argv!r})
loaded = "great_expectations" in sys.modules
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # a task process forked afterwards
    os.write(write, json.dumps("great_expectations" in sys.modules).encode())
    os._exit(0)
os.close(write)
child = json.loads(os.read(read, 100))
os.waitpid(pid, 0)
print(json.dumps({{"did": did, "loaded": loaded, "child": child}}))
"""


def probe(argv: list[str], executor: str = "LocalExecutor") -> dict:
    env = {**os.environ, "AIRFLOW__CORE__EXECUTOR": executor, "GX_ANALYTICS_ENABLED": "false"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_local_executor_scheduler_loads_gx_for_the_tasks_it_forks():
    assert probe(["airflow", "scheduler"]) == {"did": True, "loaded": True, "child": True}


@pytest.mark.parametrize("component", ["api-server", "dag-processor", "triggerer", "tasks"])
def test_other_components_stay_lean(component):
    assert probe(["airflow", component]) == {"did": False, "loaded": False, "child": False}


def test_a_scheduler_of_another_executor_stays_lean():
    assert probe(["airflow", "scheduler"], executor="CeleryExecutor") == {
        "did": False,
        "loaded": False,
        "child": False,
    }
