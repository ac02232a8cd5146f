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

from airflow.sdk import Param

from erpsync.flow_dag import QUICKBOOKS, SALESFORCE, FlowParts, build_flow_dag
from erpsync.flows import ASSETS, interval_schedule, sync_params
from erpsync.operators.quickbooks_upsert import QuickBooksUpsertOperator
from erpsync.operators.writeback import WriteBackOperator


def upsert_through_bridge(plan, kwargs):
    """Queue the customers as one bridge job and wait in the triggerer, not on a worker slot."""
    return QuickBooksUpsertOperator(
        task_id="upsert",
        manifest=plan.output,
        flow=kwargs["flow"],
        qbwc_bridge_conn_id=QUICKBOOKS.conn_id,
        pool=QUICKBOOKS.pool,
        outlets=kwargs["outlets"],
    )


def write_list_ids_back(upsert):
    """Keep the QuickBooks ListID on the Salesforce account (Account.QB_ListID__c)."""
    writeback = WriteBackOperator(
        task_id="write_back_list_id",
        manifest=upsert.output,
        object_name="Account",
        field="QB_ListID__c",
        flow="sf_accounts_to_qb_customers",
        **SALESFORCE.operator_kwargs(),
    )
    upsert >> writeback
    return [writeback]


dag = build_flow_dag(
    dag_id="sf_accounts_to_qb_customers",
    doc_md=__doc__,
    schedule=interval_schedule("0 * * * *"),
    source=SALESFORCE,
    target=QUICKBOOKS,
    lookups=[QUICKBOOKS],
    params={
        **sync_params(batch_size=200),
        "rows_per_job": Param(
            2000,
            type="integer",
            minimum=1,
            maximum=4000,
            description="Customers per bridge job: the upsert waits for the Web Connector once per job and "
            "phase; the bridge packs each job's requests into exchanges of its own batch size.",
        ),
    },
    outlets=[ASSETS["qb_customers"]],
    parts=FlowParts(upsert=upsert_through_bridge, after_upsert=write_list_ids_back),
    tags=["accounts"],
)
