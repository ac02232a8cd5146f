"""`erpsync validate`: green for a mapping the target accepts, red (exit 1) naming each problem."""

from __future__ import annotations

import subprocess
import sys

import pytest

from erpsync.adapters import FieldMeta
from erpsync.adapters.memory import MemoryAdapter
from erpsync.cli import main
from tests.e2e.dags_for_tests.sync_fixture import make_world


@pytest.fixture
def world(tmp_path):
    paths = make_world(tmp_path, flow="good_flow")
    systems = tmp_path / "systems.yaml"
    systems.write_text(
        f"salesforce: {{adapter: memory, options: {{path: '{paths['source']}', name: salesforce}}}}\n"
        f"quickbooks: {{adapter: memory, options: {{path: '{paths['target']}', name: quickbooks}}}}\n"
    )
    return paths, str(systems)


def _validate(capsys, paths, systems, *extra):
    code = main(
        ["validate", "--mappings-dir", paths["mappings"], "--systems", systems, "--color", "never", *extra]
    )
    return code, capsys.readouterr().out


def test_good_mapping_is_green(world, capsys):
    paths, systems = world
    code, out = _validate(capsys, paths, systems, "-v")
    assert code == 0, out
    assert out.splitlines()[0].startswith("GREEN    good_flow")
    assert "✓ connection quickbooks: quickbooks: " in out
    assert "✓ 5 target fields match quickbooks Customer" in out
    assert "Email: no max_length or truncate; values over 100 characters will be refused" in out
    assert "1 of 1 flow(s) ok" in out


def test_broken_mapping_is_red_with_every_problem(world, capsys):
    paths, systems = world
    with open(paths["mappings"] + "/good_flow.yaml") as f:
        text = (
            f.read()
            .replace(
                "Name:         {from: Name, truncate: 41, required: true}", "Name: {from: Name, truncate: 50}"
            )
            .replace("City:         {from: BillingCity}", "Town: {from: BillingCity}")
            .replace("Notes:        {from: Description, on: [create]}", "Notes: {from: Description}")
            .replace("flow: good_flow", "flow: broken_flow")
        )
    with open(paths["mappings"] + "/broken_flow.yaml", "w") as f:
        f.write(text)
    target = MemoryAdapter(paths["target"])
    target.define(
        "Customer",
        [
            FieldMeta("Name", length=41, required=True),
            FieldMeta("Email", length=100),
            FieldMeta("City", length=31),
            FieldMeta("Notes", length=4095, updateable=False),
            FieldMeta("SalesforceId", length=18, external_id=True),
            FieldMeta("Terms", required=True),
        ],
        id_field="ListID",
    )
    code, out = _validate(capsys, paths, systems, "--flow", "broken_flow", "--flow", "good_flow")
    assert code == 1, out
    lines = out.splitlines()
    assert lines[0].startswith("RED      broken_flow")
    assert (
        "✗ target field Customer.Name: the mapping allows 50 characters, quickbooks at most 41 (line 16)"
        in out
    )
    assert "✗ target field Customer.Town: unknown in quickbooks (line 18)" in out
    assert "✗ target field Customer.Notes: quickbooks does not allow updating it" in out
    assert "✗ target field Customer.Terms: required by quickbooks but not mapped" in out
    assert any(line.startswith("RED      good_flow") for line in lines), "good_flow misses Terms as well"
    assert "0 of 2 flow(s) ok; red: broken_flow, good_flow" in out


def test_unloadable_mapping_and_missing_system_are_red(world, capsys, tmp_path):
    paths, systems = world
    with open(paths["mappings"] + "/bad_yaml.yaml", "w") as f:
        f.write("flow: bad_yaml\nsource: {system: salesforce}\n")
    code, out = _validate(capsys, paths, systems, "--flow", "bad_yaml")
    assert code == 1 and "RED      bad_yaml" in out and "✗ mapping: " in out and "bad_yaml.yaml" in out
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(
        f"salesforce: {{adapter: memory, options: {{path: '{paths['source']}'}}}}\n"
        "quickbooks: {adapter: carrier_pigeon}\n"
    )
    code, out = _validate(capsys, paths, str(unknown), "--flow", "good_flow")
    assert code == 1
    assert "✗ connection quickbooks: unknown adapter 'carrier_pigeon'" in out


def test_bad_systems_file_is_a_clear_error(world, capsys, tmp_path):
    paths, _ = world
    bad = tmp_path / "bad.yaml"
    bad.write_text("quickbooks: {conn_id: x}\n")
    code = main(["validate", "--mappings-dir", paths["mappings"], "--systems", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and f"{bad}: system 'quickbooks' needs an 'adapter' name" in err


def test_console_script_runs(world):
    paths, systems = world
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "erpsync.cli",
            "validate",
            "--mappings-dir",
            paths["mappings"],
            "--systems",
            systems,
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "GREEN" in out.stdout
