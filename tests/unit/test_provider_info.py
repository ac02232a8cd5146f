"""Airflow discovers erpsync as a provider and offers its connection types."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = r"""
import json
from airflow.providers_manager import ProvidersManager
pm = ProvidersManager()
hooks = pm.hooks
print(json.dumps({
    "provider": "erpsync" in pm.providers,
    "types": {t: (hooks[t].hook_class_name if hooks.get(t) else None) for t in ("exact_online", "qbwc_bridge", "autotask")},
}))
"""


def test_connection_types_are_registered():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["provider"] is True
    assert found["types"] == {
        "exact_online": "erpsync.hooks.exact_online.ExactOnlineHook",
        "qbwc_bridge": "erpsync.hooks.qbwc_bridge.QbwcBridgeHook",
        "autotask": "erpsync.hooks.autotask.AutotaskHook",
    }
