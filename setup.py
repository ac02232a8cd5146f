"""Map the DESIGN.md folders onto one import namespace, `erpsync.*`.

The folders stay where Airflow and DESIGN.md expect them (plugins/hooks, include/qbwc_bridge, ...),
but every module has exactly one import name. plugins/.airflowignore stops Airflow's plugin loader
from importing the same files again under bare names; tests/unit/test_imports.py checks both.
"""

from setuptools import find_packages, setup

PACKAGE_ROOTS = {
    "erpsync": "include/erpsync",
    "erpsync.hooks": "plugins/hooks",
    "erpsync.operators": "plugins/operators",
    "erpsync.triggers": "plugins/triggers",
    "erpsync.qbwc_bridge": "include/qbwc_bridge",
    "erpsync.sandbox": "sandbox",
}

packages = []
for name, folder in PACKAGE_ROOTS.items():
    packages.append(name)
    packages.extend(f"{name}.{sub}" for sub in find_packages(folder))

setup(packages=packages, package_dir=PACKAGE_ROOTS, include_package_data=False)
