"""sf_orders_to_exact end to end: the real DAG from dags/ under `dag.test()`, the Salesforce simulator
(its seeded demo org: 200 orders in four statuses) as the source and the Exact Online simulator as the
target, over real sockets; the contents of Exact are asserted after each run.

One world per module; the tests run in order: first run, rerun without change, a change in Salesforce
(one order edited, one draft activated), a broken connection that alerts by e-mail and webhook.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.flow_world import mail_html, run_dag, set_alert_connections, smtp_sink, webhook_sink

FLOW = "sf_orders_to_exact"
DIV = 1001234
PARAMS = {"statuses": ["Activated"]}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_db, dagbag):
    from erpsync.sandbox.exact.testing import running_exact
    from erpsync.sandbox.salesforce.testing import running_salesforce

    folder = tmp_path_factory.mktemp("flow-orders")
    mp = pytest.MonkeyPatch()
    # 40 Exact items hold every code the seeded Salesforce orders use (the first clean Exact items).
    with (
        running_exact(
            folder / "exact", minutely_limit=100_000, daily_limit=1_000_000, error_budget=0, item_count=40
        ) as exact,
        running_salesforce(folder / "sf") as sf,
    ):
        mp.setenv("ERPSYNC_STATE_URL", f"sqlite:///{folder / 'state.db'}")
        mp.setenv(
            "AIRFLOW_CONN_EXACT_ONLINE_DEFAULT",
            exact.connection_json(
                refresh_token=exact.new_consent(), token_store_url=f"sqlite:///{folder / 'tokens.db'}"
            ),
        )
        mp.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", sf.connection_json("password"))
        try:
            yield {
                "exact": exact,
                "sf": sf,
                "dag": dagbag.get_dag(FLOW),
                "folder": folder,
                "mp": mp,
                "state_url": f"sqlite:///{folder / 'state.db'}",
            }
        finally:
            mp.undo()


def table(world, name: str) -> dict[str, dict]:
    return world["exact"].simulator.store.divisions[DIV].tables[name]


def sf_orders(world) -> list[dict]:
    """Every Salesforce order with its bill-to e-mail and its lines' product codes, from the org."""
    org = world["sf"].simulator.org
    t = org.tables
    lines: dict[str, list[dict]] = {}
    for item in t["OrderItem"].values():
        if not item.get("IsDeleted"):
            entry = t["PricebookEntry"][item["PricebookEntryId"]]
            code = t["Product2"][entry["Product2Id"]]["ProductCode"]
            lines.setdefault(item["OrderId"], []).append({**item, "code": code})
    out = []
    for order in t["Order"].values():
        if order.get("IsDeleted"):
            continue
        contact = t["Contact"].get(order.get("BillToContactId")) or {}
        out.append({**order, "email": contact.get("Email"), "lines": lines.get(order["Id"], [])})
    return out


def exact_orders(world) -> dict[str, dict]:
    """YourRef -> Exact sales order, with its lines."""
    lines: dict[str, list[dict]] = {}
    for line in table(world, "salesorder/SalesOrderLines").values():
        lines.setdefault(line["OrderID"], []).append(line)
    return {
        o["YourRef"]: {**o, "lines": lines.get(o["OrderID"], [])}
        for o in table(world, "salesorder/SalesOrders").values()
        if o.get("YourRef")
    }


def exact_stamps(world) -> dict[str, str]:
    return {
        f"{name}:{key}": rec.get("Modified")
        for name in ("salesorder/SalesOrders", "salesorder/SalesOrderLines", "crm/Accounts", "crm/Contacts")
        for key, rec in table(world, name).items()
    }


def quarantined(world) -> dict[str, dict]:
    from erpsync.state import StateStore

    return {e["source_key"]: e for e in StateStore(world["state_url"]).quarantine_entries(FLOW)}


def sf_patch(world, object_name: str, rid: str, changes: dict) -> None:
    import httpx

    sf = world["sf"]
    resp = httpx.patch(
        f"{sf.url}/services/data/v{sf.info['api_version']}/sobjects/{object_name}/{rid}",
        json=changes,
        headers={"Authorization": f"Bearer {sf.token()}"},
        verify=sf.ssl_context(),
    )
    assert resp.status_code == 204, resp.text


def classify(world) -> dict[str, list[dict]]:
    """The seeded orders by what the flow must do with them."""
    exact_codes = {i["Code"] for i in table(world, "logistics/Items").values()}
    orders = sf_orders(world)
    activated = [o for o in orders if o["Status"] == "Activated"]
    unknown_product = [o for o in activated if any(ln["code"] not in exact_codes for ln in o["lines"])]
    return {
        "activated": activated,
        "others": [o for o in orders if o["Status"] != "Activated"],
        "unknown_product": unknown_product,
        # Orders whose bill-to contact has no e-mail go to the mapping's default debtor: the Exact
        # account with code 1 ("Diverse debiteuren" in the sandbox, as in a new Dutch administration).
        "no_email": [o for o in activated if not o["email"] and o not in unknown_product],
        "sendable": [o for o in activated if o["email"] and o not in unknown_product],
    }


def test_first_run_posts_activated_orders_with_their_lines_and_customers(world, capfd):
    accounts_before = {a["ID"] for a in table(world, "crm/Accounts").values()}
    run = run_dag(world["dag"], capfd, **PARAMS)
    assert run.ok, run.why()

    kinds = classify(world)
    assert all(kinds[k] for k in ("others", "unknown_product", "no_email", "sendable")), "seed has each kind"
    posted = exact_orders(world)
    assert posted, "no order reached Exact"
    accounts = table(world, "crm/Accounts")
    default_debtor = next(a["ID"] for a in accounts.values() if a["Code"].strip() == "1")
    by_number = {o["OrderNumber"]: o for o in kinds["sendable"] + kinds["no_email"]}
    for number, e in posted.items():
        # Everything in Exact is an activated order with known products, with its lines.
        assert number in by_number, f"Exact holds {number}, which should not have been sent"
        o = by_number[number]
        # Lines with their VAT code enriched from the Salesforce tax rate (21 % -> 2, 9 % -> 1).
        vat = {21.0: "2", 9.0: "1"}
        assert sorted(
            (ln["code"], ln["Quantity"], ln["UnitPrice"], vat[ln["Tax_Rate__c"]]) for ln in o["lines"]
        ) == sorted((ln["ItemCode"], ln["Quantity"], ln["NetPrice"], ln["VATCode"]) for ln in e["lines"]), (
            number
        )
        terms = {
            "Net 14": "14",
            "Net 30": "30",
            "Net 60": "60",
            "Due on receipt": "00",
            "Prepaid": "VB",
        }
        # An empty term is left to Exact: the customer's own payment condition (rule 5, never a guess).
        own = accounts[e["OrderedBy"]].get("PaymentConditionSales")
        expected = terms[o["Payment_Terms__c"]] if o.get("Payment_Terms__c") else own
        assert e.get("PaymentCondition") == expected, number
        assert e["Currency"] == "EUR"
        # The customer was found or created by the bill-to contact's e-mail, else the default debtor.
        if o["email"]:
            assert accounts[e["OrderedBy"]]["Email"].lower() == o["email"].strip().lower(), number
        else:
            assert e["OrderedBy"] == default_debtor, number
        assert e["Description"] == f"Salesforce order {number} {o['PoNumber']}"

    stuck = quarantined(world)
    for o in kinds["unknown_product"]:
        assert o["Id"] in stuck, f"order {o['OrderNumber']} with an unknown product was not quarantined"
        assert stuck[o["Id"]]["stage"] == "map" and stuck[o["Id"]]["rule"] == "lookup"
    for o in kinds["no_email"]:
        assert o["OrderNumber"] in posted and o["Id"] not in stuck, stuck.get(o["Id"])

    created = set(table(world, "crm/Accounts")) - accounts_before
    new_emails = {accounts[a]["Email"].lower() for a in created}
    assert new_emails, "new customers were created"
    # The seed's order of steps (rule 3): a customer is created only for an order that is posted, never
    # for one refused for an unknown product or left out by the status filter.
    posted_emails = {o["email"].strip().lower() for o in kinds["sendable"] if o["OrderNumber"] in posted}
    assert new_emails <= posted_emails, sorted(new_emails - posted_emails)

    counts = run.counts
    assert counts["created"] == len(posted) and counts["updated"] == 0, counts
    assert run.xcom("target.verify")["differences"] == 0


def test_every_activated_order_with_a_customer_and_known_products_reaches_exact(world):
    """Runs after the first run: each such order is in Exact, whatever its payment terms."""
    posted = exact_orders(world)
    missing = [o for o in classify(world)["sendable"] if o["OrderNumber"] not in posted]
    stuck = quarantined(world)
    assert [o["OrderNumber"] for o in missing] == [], "\n".join(
        f"{o['OrderNumber']} (Payment_Terms__c={o.get('Payment_Terms__c')!r}): "
        f"{(stuck.get(o['Id']) or {}).get('message')}"
        for o in missing
    )


def test_rerun_without_change_writes_nothing(world, capfd):
    before = exact_stamps(world)
    run = run_dag(world["dag"], capfd, **PARAMS)
    assert run.ok, run.why()
    assert run.counts["created"] == run.counts["updated"] == 0, run.counts
    customers = run.xcom("transform.ensure_customers")["extra"]
    assert customers["created"] == customers["updated"] == 0, customers
    assert exact_stamps(world) == before


def test_a_change_in_salesforce_makes_exactly_those_writes(world, capfd):
    orders = sorted(sf_orders(world), key=lambda o: o["OrderNumber"])
    posted = exact_orders(world)
    accounts = table(world, "crm/Accounts")
    edited = next(o for o in orders if o["OrderNumber"] in posted and o["email"])
    edited_account = dict(accounts[posted[edited["OrderNumber"]]["OrderedBy"]])
    exact_codes = {i["Code"] for i in table(world, "logistics/Items").values()}
    draft = next(
        o
        for o in orders
        if o["Status"] == "Draft"
        and o["email"]
        and all(ln["code"] in exact_codes for ln in o["lines"])
        # "Prepaid" maps to a payment condition the Exact sandbox lacks (see the test above).
        and o.get("Payment_Terms__c") != "Prepaid"
        and (o["email"] or "").lower() != edited["email"].lower()
    )
    # The edited order's contact has a new phone: its customer is not updated, since the order is
    # already in Exact and skipped (rule 3: no customer work for an order that is not posted).
    sf_patch(world, "Contact", edited["BillToContactId"], {"Phone": "+31 30 000 0000"})
    sf_patch(world, "Order", edited["Id"], {"Description": "Deliver to the back door"})
    sf_patch(world, "Order", draft["Id"], {"Status": "Activated"})

    before = exact_stamps(world)
    run = run_dag(world["dag"], capfd, **PARAMS)
    assert run.ok, run.why()
    # The edited order is already in Exact: skipped, as the seed says (rule 1); the new one is posted.
    assert (run.counts["created"], run.counts["updated"]) == (1, 0), run.counts
    assert run.counts["skipped"] >= 1 and run.counts["failed"] == 0, run.counts

    now = exact_orders(world)
    assert now[edited["OrderNumber"]]["Remarks"] == posted[edited["OrderNumber"]]["Remarks"]
    assert draft["OrderNumber"] in now
    assert sorted(ln["code"] for ln in draft["lines"]) == sorted(
        ln["ItemCode"] for ln in now[draft["OrderNumber"]]["lines"]
    )
    after = exact_stamps(world)
    changed = {k for k in after if after[k] != before.get(k)}
    new_order = now[draft["OrderNumber"]]
    allowed = {f"salesorder/SalesOrders:{new_order['OrderID']}"}
    allowed |= {f"salesorder/SalesOrderLines:{ln['ID']}" for ln in new_order["lines"]}
    # The activated order's customer may have been created or updated (address from the order).
    allowed |= {f"crm/Accounts:{new_order['OrderedBy']}"}
    allowed |= {
        f"crm/Contacts:{c['ID']}"
        for c in table(world, "crm/Contacts").values()
        if c.get("Account") == new_order["OrderedBy"]
    }
    assert changed <= allowed, changed - allowed
    assert f"salesorder/SalesOrders:{new_order['OrderID']}" in changed
    assert table(world, "crm/Accounts")[edited_account["ID"]] == edited_account


def test_an_order_already_in_exact_is_skipped_and_updating_open_ones_is_a_setting(world, capfd):
    """Rule 1: the seed skips an order Exact already holds, also one Exact has completed (no
    ORDER_CLOSED in quarantine on every run); `existing_orders: update` updates an open one."""
    posted = exact_orders(world)
    orders = {o["OrderNumber"]: o for o in sf_orders(world)}
    open_one, done_one = [orders[n] for n in sorted(posted) if n in orders][-2:]
    done_id = posted[done_one["OrderNumber"]]["OrderID"]
    table(world, "salesorder/SalesOrders")[done_id].update(Status=21, StatusDescription="Complete")
    sf_patch(world, "Order", open_one["Id"], {"Description": "Skipped: already in Exact"})
    sf_patch(world, "Order", done_one["Id"], {"Description": "Skipped: Exact completed it"})

    before = exact_stamps(world)
    run = run_dag(world["dag"], capfd, **PARAMS)
    assert run.ok, run.why()
    assert (run.counts["created"], run.counts["updated"], run.counts["failed"]) == (0, 0, 0), run.counts
    assert run.counts["skipped"] >= 2, run.counts
    assert exact_stamps(world) == before
    stuck = quarantined(world)
    assert open_one["Id"] not in stuck and done_one["Id"] not in stuck, (
        stuck.get(open_one["Id"]),
        stuck.get(done_one["Id"]),
    )

    sf_patch(world, "Order", open_one["Id"], {"Description": "Updated: the setting says so"})
    run = run_dag(world["dag"], capfd, **PARAMS, existing_orders="update")
    assert run.ok, run.why()
    # Open orders changed in the window are updated (this one, and any the earlier runs skipped).
    assert run.counts["created"] == 0 and run.counts["updated"] >= 1, run.counts
    assert exact_orders(world)[open_one["OrderNumber"]]["Remarks"] == "Updated: the setting says so"
    assert (
        exact_orders(world)[done_one["OrderNumber"]]["Remarks"] == posted[done_one["OrderNumber"]]["Remarks"]
    )

    # Back to skipping (named: dag.test keeps the last run's conf as the DAG's params): whatever the
    # update run quarantined (the completed order) is skipped and leaves quarantine.
    run = run_dag(world["dag"], capfd, **PARAMS, existing_orders="skip")
    assert run.ok, run.why()
    assert done_one["Id"] not in quarantined(world)


def test_the_statuses_param_alone_decides_which_orders_go(world, capfd):
    """Rule 2: "paid only", as the seed's example: with statuses [Paid] the paid orders go (the
    mapping has no status filter of its own), and customers are made only for them."""
    accounts_before = set(table(world, "crm/Accounts"))
    before = exact_orders(world)
    run = run_dag(world["dag"], capfd, statuses=["Paid"], full_refresh=True)
    assert run.ok, run.why()
    exact_codes = {i["Code"] for i in table(world, "logistics/Items").values()}
    paid = [
        o
        for o in sf_orders(world)
        if o["Status"] == "Paid"
        and all(ln["code"] in exact_codes for ln in o["lines"])
        and (not o["email"] or EMAIL.match(o["email"].strip()))  # rule 4's test has the others
    ]
    assert paid, "the seed has paid orders with known products"
    now = exact_orders(world)
    new = {n: o for n, o in now.items() if n not in before}
    stuck = quarantined(world)
    missing = [
        (o["OrderNumber"], o["email"], stuck.get(o["Id"])) for o in paid if o["OrderNumber"] not in now
    ]
    assert missing == [], missing
    assert set(new) <= {o["OrderNumber"] for o in paid}, set(new) - {o["OrderNumber"] for o in paid}
    assert run.counts["created"] == len(new) > 0, run.counts
    accounts = table(world, "crm/Accounts")
    new_emails = {accounts[a]["Email"].lower() for a in set(accounts) - accounts_before}
    assert new_emails <= {o["email"].strip().lower() for o in paid if o["email"]}


def test_the_default_debtor_is_only_for_orders_without_an_e_mail(world, capfd):
    """Rule 4: an order whose e-mail is invalid, or whose customer step failed (a country Exact cannot
    take), is quarantined with that reason, never booked on the default debtor "Diverse debiteuren"."""
    exact_codes = {i["Code"] for i in table(world, "logistics/Items").values()}
    posted = exact_orders(world)
    draft = next(
        o
        for o in sorted(sf_orders(world), key=lambda o: o["OrderNumber"], reverse=True)
        if o["Status"] == "Draft"
        and o["email"]
        and EMAIL.match(o["email"].strip())
        and all(ln["code"] in exact_codes for ln in o["lines"])
        and o["OrderNumber"] not in posted
    )
    sf_patch(world, "Order", draft["Id"], {"BillingCountry": "Atlantis"})
    sf_patch(world, "Order", draft["Id"], {"Status": "Activated"})
    run = run_dag(world["dag"], capfd, statuses=["Activated", "Paid"], full_refresh=True)
    assert run.ok, run.why()

    now, stuck = exact_orders(world), quarantined(world)
    assert draft["OrderNumber"] not in now
    assert (stuck[draft["Id"]]["stage"], stuck[draft["Id"]]["rule"]) == ("customer", "INVALID_COUNTRY")
    assert "default debtor" in stuck[draft["Id"]]["message"]
    invalid = [
        o
        for o in sf_orders(world)
        if o["Status"] in ("Activated", "Paid") and o["email"] and not EMAIL.match(o["email"].strip())
    ]
    assert invalid, "the seed has orders whose bill-to contact has an invalid e-mail"
    for o in invalid:
        assert o["OrderNumber"] not in now, (o["OrderNumber"], o["email"])
        assert (stuck[o["Id"]]["stage"], stuck[o["Id"]]["rule"]) == ("customer", "INVALID_EMAIL")


def test_an_unknown_payment_term_is_quarantined_not_booked_on_30_days(world, capfd):
    """Rule 5: a payment term the value map does not know (a value added to the Salesforce picklist)
    quarantines the order at map, naming the field and the value; nothing reaches Exact for it."""
    exact_codes = {i["Code"] for i in table(world, "logistics/Items").values()}
    posted, stuck = exact_orders(world), quarantined(world)
    draft = next(
        o
        for o in sorted(sf_orders(world), key=lambda o: o["OrderNumber"], reverse=True)
        if o["Status"] == "Draft"
        and o["email"]
        and EMAIL.match(o["email"].strip())
        and all(ln["code"] in exact_codes for ln in o["lines"])
        and o["OrderNumber"] not in posted
        and o["Id"] not in stuck
    )
    sf_patch(world, "Order", draft["Id"], {"Payment_Terms__c": "Net 45", "Status": "Activated"})
    run = run_dag(world["dag"], capfd, **PARAMS)
    assert run.ok, run.why()
    assert draft["OrderNumber"] not in exact_orders(world)
    entry = quarantined(world)[draft["Id"]]
    assert (entry["stage"], entry["rule"], entry["column"]) == ("map", "unmapped", "PaymentCondition"), entry
    assert entry["value"] == "Net 45", entry
    assert run.counts["created"] == 0 and run.counts["quarantined"] >= 1, run.counts


def addresses(world) -> dict[str, dict]:
    """Exact's crm/Addresses (none until the first is created)."""
    return world["exact"].simulator.store.divisions[DIV].tables.get("crm/Addresses", {})


def _fresh_drafts(world, n: int) -> list[dict]:
    """`n` draft orders with a valid e-mail, known products and a mapped term, not yet in Exact or stuck."""
    exact_codes = {i["Code"] for i in table(world, "logistics/Items").values()}
    posted, stuck = exact_orders(world), quarantined(world)
    found = [
        o
        for o in sorted(sf_orders(world), key=lambda o: o["OrderNumber"])
        if o["Status"] == "Draft"
        and o["email"]
        and EMAIL.match(o["email"].strip())
        and all(ln["code"] in exact_codes for ln in o["lines"])
        and o.get("Payment_Terms__c") in ("Net 14", "Net 30", "Net 60", "Due on receipt", None)
        and o["OrderNumber"] not in posted
        and o["Id"] not in stuck
    ]
    assert len(found) >= n, f"the seed has {len(found)} such drafts, need {n}"
    return found[:n]


def test_the_delivery_address_and_dutch_house_numbers_on_both_addresses(world, capfd):
    """Rule 5: the order's shipping address becomes a delivery address (crm/Addresses, type 4) of the
    customer, referenced by the order's DeliveryAddress; Dutch street lines are split into street /
    number / addition and written normalised ("street number addition") on both the delivery and the
    invoice (account) address, postcodes as PostNL writes them. A second order to the same address,
    typed differently, reuses it."""
    first, second = _fresh_drafts(world, 2)
    sf_patch(
        world,
        "Order",
        first["Id"],
        {
            "Status": "Activated",
            "BillingStreet": "Keizersgracht  0123-a",
            "BillingPostalCode": "1015cj",
            "BillingCity": "Amsterdam",
            "BillingCountry": "Nederland",
            "ShippingStreet": "Oudegracht 12bis",
            "ShippingPostalCode": "3511ab",
            "ShippingCity": "Utrecht",
            "ShippingCountry": "Netherlands",
        },
    )
    addresses_before = set(addresses(world))
    run = run_dag(world["dag"], capfd, **PARAMS)
    assert run.ok, run.why()
    order = exact_orders(world)[first["OrderNumber"]]
    account = table(world, "crm/Accounts")[order["OrderedBy"]]
    assert account["Email"].lower() == first["email"].strip().lower()
    assert (account["AddressLine1"], account["Postcode"], account["City"], account["Country"]) == (
        "Keizersgracht 123 A",
        "1015 CJ",
        "Amsterdam",
        "NL",
    ), account
    assert order["DeliveryAddress"], "the order has no delivery address"
    delivery = addresses(world)[order["DeliveryAddress"]]
    assert (delivery["Type"], delivery["Account"]) == (4, order["DeliverTo"]), delivery
    assert order["DeliverTo"] == order["OrderedBy"]
    assert (delivery["AddressLine1"], delivery["Postcode"], delivery["City"], delivery["Country"]) == (
        "Oudegracht 12 BIS",
        "3511 AB",
        "Utrecht",
        "NL",
    ), delivery
    assert set(addresses(world)) - addresses_before == {order["DeliveryAddress"]}

    # The same customer orders again, to the same address typed another way: no second address.
    sf_patch(
        world,
        "Order",
        second["Id"],
        {
            "Status": "Activated",
            "BillToContactId": first["BillToContactId"],
            "ShippingStreet": "oudegracht 12 - BIS",
            "ShippingPostalCode": "3511 AB",
            "ShippingCity": "Utrecht",
            "ShippingCountry": "NL",
        },
    )
    run = run_dag(world["dag"], capfd, **PARAMS)
    assert run.ok, run.why()
    again = exact_orders(world)[second["OrderNumber"]]
    assert again["OrderedBy"] == order["OrderedBy"]
    assert again["DeliveryAddress"] == order["DeliveryAddress"]
    assert set(addresses(world)) - addresses_before == {order["DeliveryAddress"]}


def test_payment_methods_pick_the_exact_condition_together_with_the_term(world, capfd):
    """Rule 5: the order's payment method (Payment_Method__c) and term choose one Exact payment
    condition, whose PaymentMethod is the one paid with (I collection, V credit card); a pair the
    value map does not list is quarantined naming the pair, never booked on the term's condition."""
    debit, card, unknown = _fresh_drafts(world, 3)
    sf_patch(world, "Order", debit["Id"], {"Status": "Activated", "Payment_Terms__c": "Net 30",
                                          "Payment_Method__c": "Direct Debit"})  # fmt: skip
    sf_patch(world, "Order", card["Id"], {"Status": "Activated", "Payment_Terms__c": None,
                                         "Payment_Method__c": "Credit Card"})  # fmt: skip
    sf_patch(world, "Order", unknown["Id"], {"Status": "Activated", "Payment_Terms__c": "Net 14",
                                            "Payment_Method__c": "Cash"})  # fmt: skip
    run = run_dag(world["dag"], capfd, **PARAMS)
    assert run.ok, run.why()
    posted = exact_orders(world)
    methods = {c["Code"]: c["PaymentMethod"] for c in table(world, "cashflow/PaymentConditions").values()}
    assert posted[debit["OrderNumber"]]["PaymentCondition"] == "30I" and methods["30I"] == "I"
    assert posted[card["OrderNumber"]]["PaymentCondition"] == "CC" and methods["CC"] == "V"
    assert unknown["OrderNumber"] not in posted
    entry = quarantined(world)[unknown["Id"]]
    assert (entry["stage"], entry["rule"], entry["column"]) == ("map", "unmapped", "PaymentCondition"), entry
    assert entry["value"] == "Net 14 / Cash", entry
    assert run.counts["created"] == 2, run.counts


def invoices(world) -> dict[str, dict]:
    """YourRef -> Exact sales invoice, with its lines (none until the first invoice)."""
    tables = world["exact"].simulator.store.divisions[DIV].tables
    lines: dict[str, list[dict]] = {}
    for line in tables.get("salesinvoice/SalesInvoiceLines", {}).values():
        lines.setdefault(line["InvoiceID"], []).append(line)
    return {
        i["YourRef"]: {**i, "lines": lines.get(i["InvoiceID"], [])}
        for i in tables.get("salesinvoice/SalesInvoices", {}).values()
        if i.get("YourRef")
    }


def test_orders_or_invoices_is_a_flow_setting(world, capfd):
    """Rule 5: with sales_document=invoice an order becomes an Exact sales invoice (Type 8020, open, in
    the given sales journal) with its customer, lines, VAT codes, payment condition and delivery address;
    a rerun writes nothing, and switching back to orders never books it a second time as an order."""
    draft = _fresh_drafts(world, 1)[0]
    sf_patch(world, "Order", draft["Id"], {"Status": "Activated", "Payment_Terms__c": "Net 30",
                                          "Payment_Method__c": "Direct Debit", "ShippingStreet": "Domplein 9-bis",
                                          "ShippingPostalCode": "3512JE", "ShippingCity": "Utrecht",
                                          "ShippingCountry": "NL"})  # fmt: skip
    invoice_params = {**PARAMS, "sales_document": "invoice", "sales_journal": "71"}
    orders_before = set(exact_orders(world))
    run = run_dag(world["dag"], capfd, **invoice_params)
    assert run.ok, run.why()
    assert run.counts["created"] == 1, run.counts
    invoice = invoices(world)[draft["OrderNumber"]]
    assert (invoice["Journal"], invoice["Type"], invoice["Status"]) == ("71", 8020, 20), invoice
    assert invoice["PaymentCondition"] == "30I"
    account = table(world, "crm/Accounts")[invoice["OrderedBy"]]
    assert account["Email"].lower() == draft["email"].strip().lower()
    vat = {21.0: "2", 9.0: "1"}
    assert sorted(
        (ln["code"], ln["Quantity"], ln["UnitPrice"], vat[ln["Tax_Rate__c"]]) for ln in draft["lines"]
    ) == (sorted((ln["ItemCode"], ln["Quantity"], ln["NetPrice"], ln["VATCode"]) for ln in invoice["lines"]))
    delivery = addresses(world)[invoice["DeliverToAddress"]]
    assert (delivery["AddressLine1"], delivery["Postcode"], delivery["Type"]) == (
        "Domplein 9 BIS",
        "3512 JE",
        4,
    )
    assert set(exact_orders(world)) == orders_before, "an invoice run created a sales order"
    assert run.xcom("target.verify")["differences"] == 0

    again = run_dag(world["dag"], capfd, **invoice_params)
    assert again.ok, again.why()
    assert again.counts["created"] == again.counts["updated"] == 0, again.counts
    # Back to orders: the order is in Exact as an invoice, so it is skipped, not booked again.
    back = run_dag(world["dag"], capfd, **PARAMS)
    assert back.ok, back.why()
    assert back.counts["created"] == 0, back.counts
    assert draft["OrderNumber"] not in exact_orders(world) and len(invoices(world)) == 1


def test_a_run_whose_only_news_is_a_refused_row_sends_the_failure_summary(world, capfd, monkeypatch):
    """Rule 6: the only change is an order Exact refuses at upsert (its payment condition was removed
    from the administration): the run's report says "errors", not a plain success, and the failure
    summary goes out by mail and webhook. The next run, refused again, is no news: no mail."""
    from erpsync.state import StateStore

    exact_codes = {i["Code"] for i in table(world, "logistics/Items").values()}
    posted, stuck = exact_orders(world), quarantined(world)
    terms = {"Net 14": "14", "Net 30": "30", "Net 60": "60", "Due on receipt": "00"}
    draft = next(
        o
        for o in sorted(sf_orders(world), key=lambda o: o["OrderNumber"])
        if o["Status"] == "Draft"
        and o["email"]
        and EMAIL.match(o["email"].strip())
        and all(ln["code"] in exact_codes for ln in o["lines"])
        and o.get("Payment_Terms__c") in terms
        and o["OrderNumber"] not in posted
        and o["Id"] not in stuck
    )
    code = terms[draft["Payment_Terms__c"]]
    conditions = table(world, "cashflow/PaymentConditions")
    removed = {k: v for k, v in conditions.items() if v["Code"] == code}
    assert removed, f"the sandbox has payment condition {code}"
    sf_patch(world, "Order", draft["Id"], {"Status": "Activated"})
    try:
        for key in removed:
            del conditions[key]
        with smtp_sink() as (smtp_port, mails), webhook_sink() as (hook_port, posts):
            set_alert_connections(monkeypatch, smtp_port, hook_port)
            run = run_dag(world["dag"], capfd, **PARAMS)
            assert run.ok, run.why()
            report = run.xcom("report")
            assert (run.counts["created"], run.counts["updated"], run.counts["failed"]) == (0, 0, 1), (
                run.counts
            )
            assert report["status"] == "errors" and report["new_quarantine"] == 1, report
            history = StateStore(world["state_url"]).get_run(FLOW, run.dr.run_id)
            assert history["status"] == "errors", history
            entry = quarantined(world)[draft["Id"]]
            assert entry["stage"] == "upsert" and code in entry["message"], entry
            assert [m["Subject"] for m in mails] == [f"[erpsync] {FLOW}: errors only, 1 newly quarantined"]
            assert len(posts) == 1, posts
            post = posts[0]
            assert post["erpsync"]["status"] == "errors" and post["erpsync"]["failed"] == 1, post
            assert post["text"].startswith(
                f"erpsync flow {FLOW} finished with errors only: 1 refused at upsert"
            )
            assert f"upsert/{entry['rule']}" in post["text"] and f"upsert/{entry['rule']}" in mail_html(
                mails[0]
            )

            # Refused again on the next run (retried from quarantine): already told, no new mail.
            run = run_dag(world["dag"], capfd, **PARAMS)
            assert run.ok, run.why()
            assert run.counts["failed"] == 1 and run.xcom("report")["status"] == "success", run.counts
            assert len(mails) == 1 and len(posts) == 1, [m["Subject"] for m in mails]
    finally:
        conditions.update(removed)


def test_exact_refusing_the_token_fails_the_run_and_alerts_by_mail_and_webhook(world, capfd):
    exact = world["exact"]
    # Consent revoked in Exact (the admin revokes every token chain of the app), fresh token store.
    exact_admin = world["exact"].url + "/admin/revoke"
    world["mp"].setenv(
        "AIRFLOW_CONN_EXACT_ONLINE_DEFAULT",
        exact.connection_json(
            refresh_token=exact.new_consent(),
            token_store_url=f"sqlite:///{world['folder'] / 'tokens-revoked.db'}",
        ),
    )
    assert exact.http.post(exact_admin).status_code == 200
    with smtp_sink() as (smtp_port, mails), webhook_sink() as (hook_port, posts):
        set_alert_connections(world["mp"], smtp_port, hook_port)
        run = run_dag(world["dag"], capfd, **PARAMS)
    assert run.dr.state == "failed", run.why()
    assert run.states["validate"] == "failed", run.why()
    assert run.states["target.upsert"] == "upstream_failed"
    assert len(mails) == 1 and len(posts) == 1, (mails, posts)
    mail, post = mails[0], posts[0]
    assert mail["Subject"] == f"[erpsync] {FLOW}.validate failed"
    body = mail_html(mail)
    assert FLOW in body and "validate" in body and "exact_online" in body
    assert post["erpsync"]["flow"] == FLOW and post["erpsync"]["step"] == "validate"
    assert post["text"].startswith(f"erpsync flow {FLOW} failed at step validate: ")
    assert "invalid_grant" in post["text"] and "invalid_grant" in body, post["text"]
