"""Each project module has exactly one import name, everywhere Airflow loads it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import PROJECT

# Walk every package, load Airflow's plugins the way the scheduler and workers do, parse the DAGs,
# then list each project file with the names it was imported under.
_PROBE = r"""
import importlib, json, pkgutil, sys
from pathlib import Path
project = Path(sys.argv[1])
import ast
tree = ast.parse((project / "setup.py").read_text())
roots = next(ast.literal_eval(n.value) for n in tree.body
             if isinstance(n, ast.Assign) and n.targets[0].id == "PACKAGE_ROOTS")
for pkg in roots:
    root = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(root.__path__, prefix=pkg + "."):
        # Alembic loads migration scripts itself, by path, with its own context set up.
        if ".migrations" not in info.name:
            importlib.import_module(info.name)
from airflow import plugins_manager
plugins_manager.ensure_plugins_loaded() if hasattr(plugins_manager, "ensure_plugins_loaded") else plugins_manager.get_plugins()
from airflow.dag_processing.dagbag import DagBag
DagBag(dag_folder=str(project / "dags"))
names = {}
for name, mod in list(sys.modules.items()):
    f = getattr(mod, "__file__", None)
    if f and Path(f).resolve().is_relative_to(project) and ".venv" not in Path(f).parts:
        names.setdefault(str(Path(f).resolve().relative_to(project)), []).append(name)
print(json.dumps(names))
"""


def _imported_names() -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(PROJECT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_each_module_has_one_name_under_erpsync():
    names = _imported_names()
    assert "plugins/hooks/__init__.py" in names, "the walk did not reach plugins/hooks"
    for path, found in names.items():
        if path.startswith("dags/"):
            continue  # DagBag loads DAG files under generated names; nothing imports them
        assert len(found) == 1, f"{path} imported under several names: {found}"
        assert found[0].startswith("erpsync"), f"{path} imported as {found[0]}, not erpsync.*"


def test_plugins_ignore_file_covers_every_package():
    """Every package folder under plugins/ is listed in plugins/.airflowignore."""
    ignored = {
        line.strip().rstrip("/")
        for line in (PROJECT / "plugins" / ".airflowignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    packages = {p.parent.name for p in (PROJECT / "plugins").glob("*/__init__.py")}
    assert packages <= ignored, f"not ignored by Airflow's plugin loader: {packages - ignored}"


def test_setup_declares_every_package():
    """setup.py finds every folder with an __init__.py, so a non-editable install ships them all."""
    sys.path.insert(0, str(PROJECT))
    try:
        import runpy
        import unittest.mock as um

        with um.patch("setuptools.setup") as fake_setup:
            runpy.run_path(str(PROJECT / "setup.py"))
        declared = set(fake_setup.call_args.kwargs["packages"])
    finally:
        sys.path.remove(str(PROJECT))
    roots = fake_setup.call_args.kwargs["package_dir"]
    on_disk = set()
    for name, folder in roots.items():
        for init in (PROJECT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(PROJECT / folder).parts
            on_disk.add(".".join((name, *rel)))
    assert on_disk <= declared, f"packages setup.py misses: {on_disk - declared}"
