"""
### Exact Online stock -> Salesforce products

Every 10 minutes, the Exact Online stock positions that changed since the last successful run
(Exact's stock feed `sync/Inventory/StockPositions`, read after the stored `Timestamp` row version,
1,000 positions a call; a run with no change costs two calls) become the number `Exact_Stock__c` on
the Salesforce product with the item's code. Only stock-managed items (`IsStockItem`) that already
have a Salesforce product are written (step `stock_items` before map); the others are skipped, and a
product is never created here (`exact_items_to_sf_products` does that).

The quantity is the param `stock_calculation`: `available` (default: in stock minus what open sales
orders reserve), `in_stock`, or `projected` (in stock plus planned receipts minus planned issues).
Only changed positions are read: after changing the calculation, run once with `full_refresh`.
Exact calls count toward the division's shared budget (60 a minute, 5,000 a day for all Exact flows).
Mapping: `include/mappings/exact_stock_to_sf_products.yaml`.
Wiring only (airflow dag built by `erpsync.flow_dag.build_flow_dag`): nothing heavy at parse time.
"""

from __future__ import annotations

from airflow.sdk import Param

from erpsync.flow_dag import EXACT_ONLINE, SALESFORCE, FlowParts, SystemRef, build_flow_dag
from erpsync.flows import interval_schedule, sync_params
from erpsync.operators.exact_stock import ExactStockItemsOperator

FLOW = "exact_stock_to_sf_products"

# The stock positions, with `Stock` computed by the calculation the trigger form picks.
EXACT_STOCK = SystemRef(
    EXACT_ONLINE.system,
    EXACT_ONLINE.conn_id,
    EXACT_ONLINE.pool,
    options={"stock_calculation": "{{ params.stock_calculation }}"},
)


def stock_items(check_source):
    """Stock-managed items with a Salesforce product go on to map; the others are skipped."""
    step = ExactStockItemsOperator(
        task_id="stock_items",
        manifest=check_source.output,
        flow=FLOW,
        exact_conn_id=EXACT_ONLINE.conn_id,
        salesforce_conn_id=SALESFORCE.conn_id,
        pool=EXACT_ONLINE.pool,
    )
    check_source >> step
    return step


dag = build_flow_dag(
    dag_id=FLOW,
    doc_md=__doc__,
    schedule=interval_schedule("*/10 * * * *"),
    source=EXACT_STOCK,
    target=SALESFORCE,
    params={
        **sync_params(batch_size=200),
        "stock_calculation": Param(
            "available",
            enum=["available", "in_stock", "projected"],
            description="The stock written to Salesforce: available (in stock minus reserved for sales "
            "orders), in_stock, or projected (plus planned receipts, minus planned issues).",
        ),
    },
    parts=FlowParts(before_map=stock_items),
    tags=["stock"],
)
