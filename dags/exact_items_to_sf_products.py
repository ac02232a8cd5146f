"""
### Exact Online items -> Salesforce products

Every hour, the Exact Online sales items changed since the last successful run become Salesforce
`Product2` records, upserted by SKU (`ProductCode`), each with its standard price book entry kept in
step. Changes are read from Exact's sync API (`sync/Logistics/Items` after the stored `Timestamp`
row version, 1,000 items a call); items deleted in Exact (`sync/Deleted`) are listed in the run
report (count `deleted_in_source` and a warning with their ids), never deleted in Salesforce. The long description is written only when a product is created, so descriptions enriched in
Salesforce are never overwritten. Mapping: `include/mappings/exact_items_to_sf_products.yaml`.

When the run wrote a product the `erpsync://salesforce/Product2` asset is updated, which starts
`sf_orders_to_exact` (an unchanged run emits no asset event).
Wiring only (airflow dag built by `erpsync.flow_dag.build_flow_dag`): nothing heavy at parse time.
"""

from __future__ import annotations

from erpsync.flow_dag import EXACT_ONLINE, SALESFORCE, build_flow_dag
from erpsync.flows import ASSETS, interval_schedule, sync_params

dag = build_flow_dag(
    dag_id="exact_items_to_sf_products",
    doc_md=__doc__,
    schedule=interval_schedule("15 * * * *"),
    source=EXACT_ONLINE,
    target=SALESFORCE,
    params=sync_params(batch_size=200),
    outlets=[ASSETS["sf_products"]],
    tags=["products"],
)
