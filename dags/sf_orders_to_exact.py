"""
### Salesforce orders -> Exact Online sales orders

Salesforce orders in the chosen statuses (param `statuses`, default `Activated`) that changed in the
data interval become Exact Online sales orders with their lines. The Salesforce order number is kept in
the Exact order's `YourRef`, so an order that already exists in Exact is skipped, never posted twice
(also one Exact has completed); the trigger form's `existing_orders: update` updates the header fields
of open ones instead.
Missing data is enriched (VAT code by rate), the customer is found by e-mail and created or updated
(company debtor with contact, or person), every product must exist in Exact (else the order is
quarantined), payment terms are mapped, and orders of unknown customers can fall back to a default
debtor. Mapping: `include/mappings/sf_orders_to_exact.yaml`.

Runs hourly and also whenever `exact_items_to_sf_products` has updated the Salesforce products.
Wiring only (airflow dag built by `erpsync.flow_dag.build_flow_dag`): nothing heavy at parse time.
"""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule

from erpsync.flow_dag import EXACT_ONLINE, SALESFORCE, FlowParts, SystemRef, build_flow_dag
from erpsync.flows import ASSETS, interval_schedule, sync_params
from erpsync.operators.exact_customers import EnsureExactCustomersOperator

# Only orders in the chosen statuses are read from Salesforce (the trigger form's `statuses`).
ORDERS = SystemRef(
    "salesforce",
    SALESFORCE.conn_id,
    SALESFORCE.pool,
    options={"filters": {"Status": "{{ params.statuses }}"}},
)


def ensure_customers(check_source):
    """Find each order's customer in Exact by e-mail, else create it, before orders are mapped."""
    ensure = EnsureExactCustomersOperator(
        task_id="ensure_customers",
        manifest=check_source.output,
        flow="sf_orders_to_exact",
        source_filter={},  # the extract already holds only the chosen statuses
        conn_id=EXACT_ONLINE.conn_id,
        pool=EXACT_ONLINE.pool,
    )
    check_source >> ensure
    return ensure


# An order already in Exact is skipped unless the trigger form says `existing_orders: update`.
EXACT_ORDERS = SystemRef(
    EXACT_ONLINE.system,
    EXACT_ONLINE.conn_id,
    EXACT_ONLINE.pool,
    options={"existing_orders": "{{ params.existing_orders }}"},
)

dag = build_flow_dag(
    dag_id="sf_orders_to_exact",
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(timetable=interval_schedule("30 * * * *"), assets=[ASSETS["sf_products"]]),
    source=ORDERS,
    target=EXACT_ORDERS,
    lookups=[EXACT_ONLINE],
    params=sync_params(batch_size=50, statuses=["Activated"], existing_orders="skip"),
    outlets=[ASSETS["exact_sales_orders"]],
    parts=FlowParts(before_map=ensure_customers),
    tags=["orders"],
)
