"""
### Salesforce accounts -> QuickBooks Desktop customers

Salesforce accounts changed in the data interval become QuickBooks Desktop customers through the Web
Connector bridge. The Salesforce Id is stored on the customer as the DataExt `SalesforceId`, matching
falls back to e-mail and then company name + address, and the QuickBooks `ListID` is written back to
the Salesforce account. Names follow QuickBooks' 41-character limit. Mapping:
`include/mappings/sf_accounts_to_qb_customers.yaml`.
Wiring only (airflow dag built by `erpsync.flow_dag.build_flow_dag`): nothing heavy at parse time.
"""

from __future__ import annotations

from erpsync.flow_dag import QUICKBOOKS, SALESFORCE, build_flow_dag
from erpsync.flows import ASSETS, interval_schedule, sync_params

dag = build_flow_dag(
    dag_id="sf_accounts_to_qb_customers",
    doc_md=__doc__,
    schedule=interval_schedule("0 * * * *"),
    source=SALESFORCE,
    target=QUICKBOOKS,
    lookups=[QUICKBOOKS],
    params=sync_params(batch_size=100),
    outlets=[ASSETS["qb_customers"]],
    tags=["accounts"],
)
