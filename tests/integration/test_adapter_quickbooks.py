"""`QuickBooksAdapter` against a live stack: the bridge over real HTTP, the Web Connector simulator
polling it, and the QuickBooks company-file simulator answering with QuickBooks' status codes."""

from __future__ import annotations

import pandas as pd
import pytest

from erpsync.adapters import ReadWindow, SystemAdapter
from erpsync.adapters.quickbooks import QuickBooksAdapter
from erpsync.errors import ConfigError, RetriableSourceError
from tests.qb_live import live_quickbooks

CONN = "qbwc_bridge_adapter_test"
IDENTITY = "dataext.SalesforceId"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with live_quickbooks(tmp_path_factory.mktemp("qb")) as stack, pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{CONN.upper()}", stack.connection_json())
        yield stack


def adapter(prefix: str | None = None, **kw) -> QuickBooksAdapter:
    return QuickBooksAdapter(CONN, idempotency_prefix=prefix, long_poll=5, wait_timeout=60, **kw)


def rows(*records: dict) -> pd.DataFrame:
    return pd.DataFrame(list(records))


def by_name(live, name: str) -> list[dict]:
    return [c for c in live.customers() if c["Name"] == name]


def test_describe_comes_from_the_qbxml_rules_without_a_network_call():
    qb = QuickBooksAdapter("no_such_connection")  # never resolved: describe makes no call
    assert isinstance(qb, SystemAdapter)
    meta = qb.describe("Customer")
    assert (meta.id_field, meta.modified_field) == ("ListID", "TimeModified")
    lengths = {
        n: meta.fields[n].length for n in ("Name", "CompanyName", "BillAddress.Addr1", "BillAddress.City")
    }
    assert lengths == {"Name": 41, "CompanyName": 41, "BillAddress.Addr1": 41, "BillAddress.City": 31}
    assert meta.fields["BillAddress.PostalCode"].length == 13 and meta.fields["Phone"].length == 21
    assert meta.fields["SalesRepRef.FullName"].length == 5
    assert meta.fields["Name"].required and meta.fields["IsActive"].type == "boolean"
    ext = meta.fields[IDENTITY]
    assert ext.external_id and ext.length == 255
    assert not meta.fields["ListID"].createable and not meta.fields["ListID"].updateable
    assert meta.fields["OpenBalance"].createable and not meta.fields["OpenBalance"].updateable
    assert qb.describe("SalesRep").fields["Initial"].length == 5
    with pytest.raises(ConfigError, match="Customer and SalesRep, not 'Invoice'"):
        qb.describe("Invoice")


def test_adds_attach_the_dataext_and_are_found_by_dataext_and_by_name(live):
    qb = adapter("it/adds")
    res = qb.upsert(
        "Customer",
        rows(
            {"_source_key": "001AA", "Name": "Alpha BV", "BillAddress.City": "Utrecht", IDENTITY: "001AA"},
            {"_source_key": "001AB", "Name": "Beta BV", "Email": "info@beta.test", IDENTITY: "001AB"},
        ),
        identity=IDENTITY,
    )
    assert res["action"].tolist() == ["created", "created"], res.to_dict("records")
    assert res["error"].isna().all()
    alpha = by_name(live, "Alpha BV")
    assert len(alpha) == 1 and alpha[0]["ListID"] == res.loc[0, "target_id"]
    assert live.data_ext("SalesforceId", alpha[0]["ListID"]) == "001AA"
    assert alpha[0]["BillAddress"]["City"] == "Utrecht"

    found = qb.read_by_keys(
        "Customer", IDENTITY, ["001AB", "001AA", "001XX"], columns=["Name", "BillAddress.City"]
    )
    assert list(found.columns) == ["ListID", IDENTITY, "Name", "BillAddress.City"]
    assert sorted(found["Name"]) == ["Alpha BV", "Beta BV"]
    assert found.set_index(IDENTITY).loc["001AA", "BillAddress.City"] == "Utrecht"

    named = qb.read_by_keys(
        "Customer", "Name", ["  alpha   bv", "Nobody Ltd"], casefold=True, columns=["EditSequence"]
    )
    assert named["ListID"].tolist() == [alpha[0]["ListID"]] and named["EditSequence"].notna().all()
    by_id = qb.read_by_keys("Customer", "ListID", [alpha[0]["ListID"], "80000FFF-1"], columns=["Name"])
    assert by_id["Name"].tolist() == ["Alpha BV"]  # one missing id does not hide the others
    by_mail = qb.read_by_keys("Customer", "Email", ["INFO@beta.test"], casefold=True, columns=[IDENTITY])
    assert by_mail[IDENTITY].tolist() == ["001AB"]
    assert qb.read_by_keys("Customer", IDENTITY, []).empty

    # Many ids at once: queries of page_size ids in ONE job; only a query holding a missing id is
    # asked again id by id (a second job). Ids are asked in sorted order: the missing one comes first.
    paged = adapter("it/paged", page_size=2)
    beta = by_name(live, "Beta BV")[0]["ListID"]
    found = paged.read_by_keys(
        "Customer", "ListID", [alpha[0]["ListID"], "10000000-1", beta], columns=["Name"]
    )
    assert sorted(found["Name"]) == ["Alpha BV", "Beta BV"] and len(paged.job_ids) == 2
    paged = adapter("it/paged2", page_size=2)
    found = paged.read_by_keys("Customer", "ListID", [alpha[0]["ListID"], beta], columns=["Name"])
    assert sorted(found["Name"]) == ["Alpha BV", "Beta BV"] and len(paged.job_ids) == 1


def test_refused_rows_come_back_as_errors_while_the_others_land(live):
    adapter("it/seed").upsert(
        "Customer", rows({"_source_key": "x", "Name": "Taken Name BV"}), identity=IDENTITY
    )
    taken = by_name(live, "Taken Name BV")[0]
    res = adapter("it/refusals").upsert(
        "Customer",
        rows(
            {"_source_key": "001R1", "Name": "Taken Name BV", IDENTITY: "001R1"},
            {"_source_key": "001R2", "Name": "Fine One BV", IDENTITY: "001R2"},
            {
                "_source_key": "001R3",
                "Name": "Bad Terms BV",
                "TermsRef.FullName": "Net 99",
                IDENTITY: "001R3",
            },
            {"_source_key": "001R4", "Name": "Long City BV", "BillAddress.City": "C" * 40, IDENTITY: "001R4"},
            {"_source_key": "001R5", "Name": "Fine Two BV", IDENTITY: "001R5"},
            {"_source_key": "001R6", "Name": None, "Email": "no-name@x.test", IDENTITY: "001R6"},
            {"_source_key": "001R7", "Name": "Maybe BV", "IsActive": "maybe", IDENTITY: "001R7"},
            {"_source_key": "001R8", "Name": "Bell BV", "Phone": "555\x07", IDENTITY: "001R8"},
        ),
        identity=IDENTITY,
    )
    out = res.set_index("_source_key")
    assert out["action"].to_dict() == {
        "001R1": "failed",
        "001R2": "created",
        "001R3": "failed",
        "001R4": "failed",
        "001R5": "created",
        "001R6": "failed",
        "001R7": "failed",
        "001R8": "failed",
    }
    assert out.loc["001R1", "error_code"] == "3100" and "already in use" in out.loc["001R1", "error"]
    assert "Taken Name BV" in out.loc["001R1", "error"] and "source 001R1" in out.loc["001R1", "error"]
    assert out.loc["001R3", "error_code"] == "3140" and "Net 99" in out.loc["001R3", "error"]
    assert out.loc["001R4", "error_code"] == "3070"
    assert "BillAddress/City" in out.loc["001R4", "error"] and "maxLength is 31" in out.loc["001R4", "error"]
    assert out.loc["001R6", "error"].endswith("CustomerAddRq/CustomerAdd/Name: is required in CustomerAdd")
    assert "IsActive: must be true or false" in out.loc["001R7", "error"]
    assert "Phone: contains the control character U+0007" in out.loc["001R8", "error"]
    assert set(out.loc[["001R6", "001R7", "001R8"], "error_code"]) == {"invalid_field"}
    assert not out["retriable"].any()
    # The existing customer that owns the name did not get the refused row's Salesforce Id.
    assert live.data_ext("SalesforceId", taken["ListID"]) is None
    assert by_name(live, "Long City BV") == [] and by_name(live, "Bad Terms BV") == []
    for key in ("001R2", "001R5"):
        assert live.data_ext("SalesforceId", out.loc[key, "target_id"]) == key


def test_mods_use_the_current_edit_sequence_and_retry_once_when_it_is_stale(live):
    created = adapter("it/mod-seed").upsert(
        "Customer",
        rows(
            {"_source_key": "001M1", "Name": "Mod One BV", "Phone": "111", IDENTITY: "001M1"},
            {"_source_key": "001M2", "Name": "Mod Two BV", "Phone": "222"},
        ),
        identity=IDENTITY,
    )
    one, two = created["target_id"].tolist()
    edited = []

    def user_edits_mod_one(xml: str) -> None:
        # A QuickBooks user saves "Mod One BV" after our read and before our first Mod arrives.
        if "<CustomerModRq" in xml and not edited:
            seq = next(c for c in live.customers() if c["ListID"] == one)["EditSequence"]
            live.qb.process(
                '<?xml version="1.0"?><?qbxml version="13.0"?><QBXML><QBXMLMsgsRq onError="stopOnError">'
                f"<CustomerModRq><CustomerMod><ListID>{one}</ListID><EditSequence>{seq}</EditSequence>"
                "<Fax>999</Fax></CustomerMod></CustomerModRq></QBXMLMsgsRq></QBXML>"
            )
            edited.append(seq)

    mods_before = live.customer_mods()
    live.before_document.append(user_edits_mod_one)
    try:
        res = adapter("it/mods").upsert(
            "Customer",
            rows(
                {
                    "_source_key": "001M1",
                    "_target_id": one,
                    "Name": "Mod One BV",
                    "Phone": "555",
                    IDENTITY: "001M1",
                },
                {
                    "_source_key": "001M2",
                    "_target_id": two,
                    "Name": "Mod Two BV",
                    "Phone": "666",
                    IDENTITY: "001M2",
                },
            ),
            identity=IDENTITY,
        )
    finally:
        live.before_document.remove(user_edits_mod_one)
    assert edited, "the concurrent edit happened"
    assert res["action"].tolist() == ["updated", "updated"], res.to_dict("records")
    assert res["target_id"].tolist() == [one, two]
    phones = {c["ListID"]: c.get("Phone") for c in live.customers()}
    assert phones[one] == "555" and phones[two] == "666"
    assert live.customer_mods() - mods_before == 3  # two Mods, then one resend after the 3200
    # Linking an existing customer (matched by a rule) stores its missing DataExt; an equal one is left alone.
    assert live.data_ext("SalesforceId", two) == "001M2" and live.data_ext("SalesforceId", one) == "001M1"

    gone = adapter("it/mods-gone").upsert(
        "Customer",
        rows({"_source_key": "001M9", "_target_id": "80000ABC-1", "Name": "Ghost BV", IDENTITY: "001M9"}),
        identity=IDENTITY,
    )
    assert gone.loc[0, "action"] == "failed" and "no such customer" in gone.loc[0, "error"]


def test_the_same_batch_retried_finds_the_same_jobs_and_posts_nothing_twice(live):
    batch = rows(
        {"_source_key": "001I1", "Name": "Idem One BV", IDENTITY: "001I1"},
        {"_source_key": "001I2", "Name": "Idem Two BV", IDENTITY: "001I2"},
    )
    first_try = adapter("dag/run-1/upsert")
    first = first_try.upsert("Customer", batch, identity=IDENTITY)
    adds = live.customer_adds()
    second_try = adapter("dag/run-1/upsert")  # a new process, as a retried Airflow task would be
    second = second_try.upsert("Customer", batch, identity=IDENTITY)
    assert second.to_dict("records") == first.to_dict("records")
    assert second_try.job_ids == first_try.job_ids
    assert live.customer_adds() == adds
    assert len(by_name(live, "Idem One BV")) == 1 and len(by_name(live, "Idem Two BV")) == 1


def test_read_windows_on_time_modified_and_sales_reps_by_their_persons_names(live):
    qb = adapter()
    everything = pd.concat(list(qb.read("Customer", chunk_rows=3)), ignore_index=True)
    assert len(everything) == len(live.customers()) and everything["ListID"].is_unique
    stamps = pd.to_datetime(everything["TimeModified"], utc=True)
    newest = stamps.max().to_pydatetime()
    recent = pd.concat(list(qb.read("Customer", window=ReadWindow(newest, None), columns=["ListID", "Name"])))
    assert list(recent.columns) == ["ListID", "Name"] and 1 <= len(recent) < len(everything)
    before = list(qb.read("Customer", window=ReadWindow(None, newest)))
    assert sum(len(f) for f in before) == int((stamps < newest).sum())
    # Sales reps through SalesRepQuery: the person's name split into first word and the rest, so a
    # Salesforce owner "Anna" + "de Vries" finds the rep AV.
    reps = list(qb.read("SalesRep", columns=["FirstName", "LastName", "Initial"]))
    assert len(reps) == 1 and list(reps[0].columns) == ["FirstName", "LastName", "Initial"]
    assert reps[0].fillna("").to_dict("records") == [
        {"FirstName": "Administrator", "LastName": "", "Initial": "ADM"},
        {"FirstName": "Anna", "LastName": "de Vries", "Initial": "AV"},
        {"FirstName": "Bram", "LastName": "Jansen", "Initial": "BJ"},
        {"FirstName": "Carla", "LastName": "Bakker", "Initial": "CB"},
    ]
    assert any("<SalesRepQueryRq" in doc for doc in live.documents)


def test_an_unreachable_bridge_is_a_retriable_error(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_QBWC_DOWN",
        '{"conn_type": "qbwc_bridge", "host": "127.0.0.1", "port": 9, "password": "x", '
        '"extra": {"company": "acme", "timeout": 2}}',
    )
    with pytest.raises(RetriableSourceError, match="bridge unreachable"):
        QuickBooksAdapter("qbwc_down").read_by_keys("Customer", IDENTITY, ["001"])
