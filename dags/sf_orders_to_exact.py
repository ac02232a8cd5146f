"""
### Salesforce orders -> Exact Online sales orders

Salesforce orders in the chosen statuses (param `statuses`, default `Activated`; the one status filter,
the mapping has none) that changed in the data interval become Exact Online sales orders with their
lines. Before mapping, the `ensure_customers` step follows the APIcenter seed's order: the status; does
the order exist in Exact (the Salesforce order number is kept in the Exact order's `YourRef`)? then it
is skipped, never posted twice, also one Exact has completed (param `existing_orders: update` updates
the header fields of open ones instead); does every product exist? (else the map step quarantines the
order); only then the customer, found by e-mail and created or updated (company debtor with contact,
or person debtor). No customer is created or changed for an order that is skipped, already in Exact or
refused for an unknown product. Orders without an e-mail go to the default debtor; an invalid e-mail or
a failed customer step quarantines the order (stage `customer`) instead. Then the order's shipping
address becomes a delivery address of the customer in Exact (found or created), referenced by the
order's `DeliveryAddress`; Dutch street lines are split into street / number / addition and written
normalised on both the invoice and the delivery address (Exact has no house-number fields). Missing data is enriched (VAT
code by rate) and payment terms and methods are mapped together to one Exact payment condition (in
Exact the method belongs to the condition): an unknown term or pair quarantines the order (stage
`map`, rule `unmapped`), none leaves Exact to use the customer's own condition; an org without the
custom field `Payment_Method__c` reads it as empty. Mapping: `include/mappings/sf_orders_to_exact.yaml`.

Orders or invoices (param `sales_document`, default `order`): with `invoice` each order becomes an
Exact sales invoice (`salesinvoice/SalesInvoices`, Type 8020) in the sales journal `sales_journal`
(default `70`) instead, with the same identity (`YourRef`), customer, lines, payment condition and
delivery address (`DeliverToAddress`). "Order exists?" looks among both the sales orders and the
invoices, so switching the setting never books an order twice; documents already in Exact stay what
they are.

Runs hourly and also whenever `exact_items_to_sf_products` has updated the Salesforce products.
Wiring only (airflow dag built by `erpsync.flow_dag.build_flow_dag`): nothing heavy at parse time.
"""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, Param

from erpsync.flow_dag import EXACT_ONLINE, SALESFORCE, FlowParts, SystemRef, build_flow_dag
from erpsync.flows import ASSETS, interval_schedule, sync_params
from erpsync.operators.exact_customers import ExactOrderStepsOperator

# Only orders in the chosen statuses are read from Salesforce (the trigger form's `statuses`).
ORDERS = SystemRef(
    "salesforce",
    SALESFORCE.conn_id,
    SALESFORCE.pool,
    # Payment_Method__c is a custom field an org may not have: then it reads empty (term alone).
    options={"filters": {"Status": "{{ params.statuses }}"}, "optional_fields": ["Payment_Method__c"]},
)


# Orders or invoices, as APIcenter offers: the flow setting `sales_document` (trigger form / params).
SALES_DOCUMENT = {
    "sales_document": "{{ params.sales_document }}",
    "sales_journal": "{{ params.sales_journal }}",
}
DOCUMENT_PARAMS = {
    "sales_document": Param(
        "order",
        enum=["order", "invoice"],
        description="What a Salesforce order becomes in Exact: a sales order, or a sales invoice (Type 8020).",
    ),
    "sales_journal": Param(
        "70",
        type="string",
        minLength=1,
        description="Code of the Exact sales journal invoices are booked in (sales_document: invoice).",
    ),
}


def order_steps(check_source):
    """The seed's steps before an order is mapped: status, order exists?, products, customer."""
    steps = ExactOrderStepsOperator(
        task_id="ensure_customers",
        manifest=check_source.output,
        flow="sf_orders_to_exact",
        statuses="{{ params.statuses | join(',') }}",
        existing_orders="{{ params.existing_orders }}",
        conn_id=EXACT_ONLINE.conn_id,
        # "order exists?" looks where the documents go: sales orders, or sales invoices
        adapter_kwargs=SALES_DOCUMENT,
        pool=EXACT_ONLINE.pool,
    )
    check_source >> steps
    return steps


# An order already in Exact is skipped unless the trigger form says `existing_orders: update`; the
# documents are sales orders, or sales invoices in the given sales journal (`sales_document`).
EXACT_ORDERS = SystemRef(
    EXACT_ONLINE.system,
    EXACT_ONLINE.conn_id,
    EXACT_ONLINE.pool,
    options={"existing_orders": "{{ params.existing_orders }}", **SALES_DOCUMENT},
)

dag = build_flow_dag(
    dag_id="sf_orders_to_exact",
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(timetable=interval_schedule("30 * * * *"), assets=[ASSETS["sf_products"]]),
    source=ORDERS,
    target=EXACT_ORDERS,
    lookups=[EXACT_ONLINE],
    params={**sync_params(batch_size=50, statuses=["Activated"], existing_orders="skip"), **DOCUMENT_PARAMS},
    outlets=[ASSETS["exact_sales_orders"]],
    parts=FlowParts(before_map=order_steps),
    tags=["orders"],
)
