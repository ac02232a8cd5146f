"""The pure parts of the QuickBooks adapter: flattening, job keys and the upsert program's job plan."""

from __future__ import annotations

from erpsync.adapters.quickbooks import UpsertProgram, flatten_record, job_key
from erpsync.qbwc_bridge.qbxml import customer_add

IDENTITY = "dataext.SalesforceId"


def test_flatten_turns_a_customer_ret_into_dotted_columns():
    flat = flatten_record(
        {
            "ListID": "80000001-1",
            "Name": "Acme",
            "Fax": "",
            "BillAddress": {"Addr1": "Main 1", "City": "Utrecht", "Note": ""},
            "SalesRepRef": {"ListID": "1", "FullName": "ADM"},
            "DataExtRet": [
                {"DataExtName": "SalesforceId", "DataExtType": "STR255TYPE", "DataExtValue": "001A"},
                {"OwnerID": "{x}", "DataExtName": "Other", "DataExtValue": "v"},
            ],
        }
    )
    assert flat == {
        "ListID": "80000001-1",
        "Name": "Acme",
        "Fax": None,
        "BillAddress.Addr1": "Main 1",
        "BillAddress.City": "Utrecht",
        "BillAddress.Note": None,
        "SalesRepRef.ListID": "1",
        "SalesRepRef.FullName": "ADM",
        "dataext.SalesforceId": "001A",
        "dataext.Other": "v",
    }


def test_job_keys_are_stable_per_batch_and_bounded():
    requests = [customer_add({"Name": "Acme"}, request_id="a0")]
    key = job_key("dag/run/upsert", "write", "d1", requests)
    assert key == job_key("dag/run/upsert", "write", "d1", requests)
    assert key.startswith("dag/run/upsert/write/")
    assert key != job_key("dag/run/upsert", "write", "d2", requests)
    assert key != job_key("dag/run2/upsert", "write", "d1", requests)
    long = job_key("d" * 300, "write", "d1", requests)
    assert len(long) <= 255 and long != job_key("d" * 299 + "e", "write", "d1", requests)


def _first_job(rows, prefix="p"):
    return next(UpsertProgram(rows, identity=IDENTITY, prefix=prefix).run())


def test_the_program_starts_with_one_write_job_for_creates_and_reads_first_for_updates():
    creates = [
        {"_source_key": "1", "Name": "A", "BillAddress.City": "X", IDENTITY: "1"},
        {"_source_key": "2", "Name": "B", "Phone": None, IDENTITY: "2"},
    ]
    job = _first_job(creates)
    assert job.phase == "write"
    assert [r.kind for r in job.requests] == ["DataExtDefQuery", "CustomerAdd", "CustomerAdd"]
    assert "<BillAddress><City>X</City></BillAddress>" in job.requests[1].xml
    assert "Phone" not in job.requests[2].xml  # an empty value is left out of an Add
    again = _first_job([dict(r) for r in creates])
    assert again.key == job.key and [r.xml for r in again.requests] == [r.xml for r in job.requests]
    assert _first_job(creates, prefix="other").key != job.key

    update = [{"_source_key": "1", "_target_id": "80000001-1", "Name": "A", IDENTITY: "1"}]
    read = _first_job(update)
    assert read.phase == "read" and [r.kind for r in read.requests] == ["CustomerQuery"]
    assert (
        "<ListID>80000001-1</ListID>" in read.requests[0].xml
        and "<OwnerID>0</OwnerID>" in read.requests[0].xml
    )


def test_a_row_the_schema_refuses_fails_alone_before_anything_is_sent():
    program = UpsertProgram(
        [
            {"_source_key": "1", "Name": "N" * 42, IDENTITY: "1"},
            {"_source_key": "2", "Name": "Fine", IDENTITY: "2"},
        ],
        identity=IDENTITY,
        prefix="p",
    )
    job = next(program.run())
    assert [r.kind for r in job.requests] == ["DataExtDefQuery", "CustomerAdd"]
    failed = program.results[0]
    assert failed["action"] == "failed" and failed["error_code"] == "3070"
    assert (
        "source 1" in failed["error"]
        and "CustomerAdd/Name: is 42 characters long; maxLength is 41" in failed["error"]
    )
    assert program.results[1] is None


def test_a_resumed_program_takes_its_saved_requests_instead_of_building_them_again(monkeypatch):
    """What the deferred upsert saves between executions (`built`) gives the same jobs, keys and
    requests without building or checking them again; a request not saved is still built."""
    import erpsync.qbwc_bridge.qbxml.builders as builders

    rows = [{"_source_key": str(i), "Name": f"Co {i}", IDENTITY: str(i)} for i in range(3)]
    first = UpsertProgram(rows, identity=IDENTITY, prefix="p")
    gen = first.run()
    write = next(gen)
    answers = [{"index": 0, "state": "done", "status_code": 0, "response": {}}] + [
        {"index": n, "state": "done", "status_code": 0, "list_id": f"8000000{n}-1"} for n in range(1, 4)
    ]
    exts = gen.send(answers)
    assert exts.phase == "dataext" and set(first.built) == {
        "a0",
        "a1",
        "a2",
        *(f"x{i}.SalesforceId" for i in range(3)),
    }

    saved = {k: v for k, v in first.built.items() if k != "a2"}  # saved before a2 was built: built anew
    calls = []
    real = builders.build_request
    monkeypatch.setattr(builders, "build_request", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    again = UpsertProgram(rows, identity=IDENTITY, prefix="p", prebuilt=saved)
    gen2 = again.run()
    write2 = next(gen2)
    assert write2.key == write.key and [r.xml for r in write2.requests] == [r.xml for r in write.requests]
    assert gen2.send(answers).key == exts.key
    # Only a2 among the rows' requests; the definition query and add are not rows' builds.
    assert calls == ["DataExtDefQuery", "CustomerAdd", "DataExtDefAdd"]
