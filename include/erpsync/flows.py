"""What every sync DAG shares at parse time: schedules, params, pools and assets.

Cheap to import (no pandas, no I/O): DAG files read only these constants and builders. Params are
JSON-schema validated by Airflow in the trigger form and the REST API; the descriptions are the
help text users see there.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, CronDataIntervalTimetable, Param

__all__ = ["ASSETS", "POOLS", "interval_schedule", "sync_params"]

#: Each external API gets one pool across all DAGs, so concurrent tasks never exceed what its rate
#: limits allow (Exact: 60 calls/min per division; the Web Connector serves one exchange at a time;
#: Salesforce allows 25 concurrent long requests). The hooks' own limiters pace calls within a task.
POOLS: dict[str, dict] = {
    "salesforce_api": {"slots": 4, "description": "Concurrent tasks calling Salesforce"},
    "exact_online_api": {
        "slots": 2,
        "description": "Concurrent tasks calling Exact Online (60/min/division)",
    },
    "qbwc_bridge": {"slots": 1, "description": "Tasks waiting on the QuickBooks Web Connector bridge"},
    # Autotask limits concurrent threads per integration and endpoint to 3 (reference/autotask.md 8);
    # the hook's request budget paces the calls inside each task.
    "autotask_api": {"slots": 2, "description": "Concurrent tasks calling Autotask PSA"},
}

#: Data produced by one flow and consumed by another (the products flow feeds the orders flow).
ASSETS = {
    "sf_products": Asset("erpsync://salesforce/Product2", extra={"flow": "exact_items_to_sf_products"}),
    "qb_customers": Asset("erpsync://quickbooks/Customer", extra={"flow": "sf_accounts_to_qb_customers"}),
    "exact_sales_orders": Asset("erpsync://exact/SalesOrder", extra={"flow": "sf_orders_to_exact"}),
}


def interval_schedule(cron: str, tz: str = "UTC") -> CronDataIntervalTimetable:
    """A cron schedule whose runs cover [previous tick, this tick): a plain cron string would give an
    empty data interval in Airflow 3, and backfills would extract nothing."""
    return CronDataIntervalTimetable(cron, timezone=tz)


def sync_params(
    *,
    batch_size: int = 200,
    statuses: list[str] | None = None,
    threshold: float = 0.1,
    existing_orders: str | None = None,
) -> dict:
    """The trigger-form params every flow accepts; `statuses` adds the order status filter and
    `existing_orders` what happens to an order the target already holds."""
    params = {
        "dry_run": Param(
            False,
            type="boolean",
            description="Stop after plan: report what would be created, updated and skipped, write nothing.",
        ),
        "full_refresh": Param(
            False,
            type="boolean",
            description="Ignore the data interval and resync every source record (still skips unchanged rows).",
        ),
        "quarantine_threshold": Param(
            threshold,
            type="number",
            minimum=0,
            maximum=1,
            description="Fail the quality step when more than this share of rows is quarantined (0.1 = 10%).",
        ),
        "batch_size": Param(
            batch_size,
            type="integer",
            minimum=1,
            maximum=10000,
            description="Records per write call or per Web Connector exchange (Salesforce collections take at most 200).",
        ),
        "retry_keys": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Only these source keys (one a line): retry chosen quarantined records. The "
            "run reads just their current rows and leaves the cursor alone; empty = the normal run.",
        ),
        "chunk_rows": Param(
            50000,
            type="integer",
            minimum=1000,
            maximum=1000000,
            description="Rows per staged chunk file; bounds the memory each task needs.",
        ),
    }
    if statuses is not None:
        params["statuses"] = Param(
            statuses,
            type="array",
            items={"type": "string"},
            minItems=1,
            description="Only orders in these statuses are sent.",
        )
    if existing_orders is not None:
        params["existing_orders"] = Param(
            existing_orders,
            type="string",
            enum=["skip", "update"],
            description="An order already in the target: skip it (the default), or update the header "
            "fields of an open one (never its lines; a completed order is quarantined).",
        )
    return params


def retry_delay_for(api: str) -> timedelta:
    """The first retry delay per API; exponential backoff doubles it up to DEFAULT_ARGS' maximum."""
    return {"exact_online_api": timedelta(minutes=1)}.get(api, timedelta(seconds=30))
