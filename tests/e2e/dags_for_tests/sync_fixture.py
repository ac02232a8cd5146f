"""Two file-backed systems and a small mapping, shared by the pipeline and operator tests.

The source looks like Salesforce Accounts, the target like QuickBooks Customers (41-character
names, external id `SalesforceId`); both are `MemoryAdapter` files so separate task executions see
the same system.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from erpsync.adapters import FieldMeta
from erpsync.adapters.memory import MemoryAdapter

FLOW = "e2e_accounts_to_customers"
T0 = datetime(2026, 5, 1, tzinfo=UTC)

MAPPING = """\
flow: {flow}
enabled: true
description: test flow over two file-backed systems
source:
  system: salesforce
  object: Account
  cursor: SystemModstamp
  key: Id
target:
  system: quickbooks
  object: Customer
  identity: SalesforceId
  match:
    - [Email]
fields:
  Name:         {{from: Name, truncate: 41, required: true}}
  Email:        {{from: Email, transform: [strip, lower]}}
  City:         {{from: BillingCity}}
  Notes:        {{from: Description, on: [create]}}
  SalesforceId: {{from: Id, on: [create]}}
quality:
  threshold: 0.5
  source:
    - {{rule: not_null, column: Id}}
    - {{rule: not_null, column: Name}}
    - {{rule: regex, column: Email, pattern: "^[^@\\\\s]+@[^@\\\\s]+\\\\.[A-Za-z]{{2,}}$"}}
  target:
    - {{rule: length_between, column: Name, min: 1, max: 41}}
"""


def make_world(root: Path, flow: str = FLOW) -> dict[str, str]:
    """Create the mapping folder and both systems under `root`; return their paths."""
    mappings = root / "mappings"
    mappings.mkdir(parents=True, exist_ok=True)
    (mappings / f"{flow}.yaml").write_text(MAPPING.format(flow=flow))
    source = MemoryAdapter(root / "salesforce.db", name="salesforce")
    source.define(
        "Account",
        [FieldMeta(n) for n in ("Name", "Email", "BillingCity", "Description")],
        id_field="Id",
        modified_field="SystemModstamp",
        id_prefix="001",
    )
    target = MemoryAdapter(root / "quickbooks.db", name="quickbooks")
    target.define(
        "Customer",
        [
            FieldMeta("Name", length=41, required=True),
            FieldMeta("Email", length=100),
            FieldMeta("City", length=31),
            FieldMeta("Notes", length=4095),
            FieldMeta("SalesforceId", length=18, external_id=True),
        ],
        id_field="ListID",
        modified_field="TimeModified",
        id_prefix="80000",
    )
    return {
        "mappings": str(mappings),
        "source": str(root / "salesforce.db"),
        "target": str(root / "quickbooks.db"),
        "state": f"sqlite:///{root / 'state.db'}",
        "flow": flow,
    }


def seed_accounts(path: str, n: int = 5, *, modified: datetime = T0) -> list[str]:
    """Put `n` good accounts in the source; return their ids."""
    source = MemoryAdapter(path)
    return source.seed(
        "Account",
        [
            {
                "Id": f"001{i:05d}",
                "Name": f"Account {i}",
                "Email": f"Owner{i}@Example.test",
                "BillingCity": "Utrecht",
                "Description": f"created by test {i}",
            }
            for i in range(n)
        ],
        modified=modified,
    )
