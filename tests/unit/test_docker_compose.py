"""docker-compose.yaml keeps the production shape (Docker cannot run here, so it is checked as data)."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from tests.conftest import PROJECT

OFFICIAL_IMAGES = re.compile(r"^(postgres|redis):[\w.-]+$")
AIRFLOW_COMMANDS = {"api-server", "scheduler", "dag-processor", "triggerer", "celery worker"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_production_services_present(services):
    expected = {
        "postgres",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "airflow-init",
        "qbwc-bridge",
        "sandbox",
    }
    assert expected <= set(services)
    assert services["sandbox"]["profiles"] == ["sandbox"]


def test_airflow_services_share_the_anchor(services, compose):
    common_env = compose["x-airflow-common"]["environment"]
    assert common_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert common_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
    assert common_env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    for name, svc in services.items():
        if not name.startswith("airflow-"):
            continue
        for key, value in common_env.items():  # merged from the anchor, possibly extended
            assert svc["environment"][key] == value, f"{name} overrides {key}"
        assert svc["image"] == compose["x-airflow-common"]["image"]


def test_long_running_services_have_healthchecks(services):
    for name, svc in services.items():
        if name in {"airflow-init", "bridge-db-init"}:
            continue
        assert "healthcheck" in svc and svc["healthcheck"]["test"], f"{name} has no healthcheck"


def test_dependencies_exist_and_wait_for_health(services):
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert cond["condition"] in {"service_healthy", "service_completed_successfully"}
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"
    for name in ("airflow-scheduler", "airflow-worker", "airflow-apiserver"):
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_named_volumes_declared(compose, services):
    declared = set(compose["volumes"])
    assert "postgres-db-volume" in declared
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if not source.startswith((".", "/", "$")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_images_and_commands_exist(services):
    scripts = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, svc in services.items():
        if "build" in svc:
            assert (PROJECT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        else:
            assert OFFICIAL_IMAGES.match(svc["image"]), f"{name} uses a non-official image {svc['image']}"
        entry = svc.get("entrypoint")
        if isinstance(entry, list):
            script = entry[0]
            assert script in scripts, f"{name} runs {script}, which pyproject does not declare"
            module = scripts[script].split(":")[0]
            # erpsync.<root>.<rest> -> the folder setup.py maps that root to
            assert _module_file(module).is_file(), f"{name}: {module} does not exist"
        elif name.startswith("airflow-") and name != "airflow-init":
            assert svc["command"] in AIRFLOW_COMMANDS, f"{name} runs an unknown airflow command"


def test_dockerfile_uses_pinned_official_airflow_image():
    text = (PROJECT / "Dockerfile").read_text()
    pinned = re.search(
        r"^apache-airflow\[postgres\]==(\S+)", (PROJECT / "requirements.txt").read_text(), re.M
    )
    assert f"ARG AIRFLOW_VERSION={pinned.group(1)}" in text
    assert "FROM apache/airflow:${AIRFLOW_VERSION}" in text
    assert "constraints.txt" in text


def test_secret_files_documented(compose):
    for secret in compose.get("secrets", {}).values():
        assert secret["file"].startswith("${"), "secret paths must be overridable"
    assert (PROJECT / "certs" / "README.md").is_file()


def _module_file(module: str):
    import ast

    tree = ast.parse((PROJECT / "setup.py").read_text())
    roots = next(
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and n.targets[0].id == "PACKAGE_ROOTS"
    )
    root = max((r for r in roots if module == r or module.startswith(r + ".")), key=len)
    rest = module[len(root) :].lstrip(".").split(".") if module != root else []
    base = PROJECT / roots[root]
    candidate = base.joinpath(*rest)
    return candidate / "__init__.py" if candidate.is_dir() else candidate.with_suffix(".py")
