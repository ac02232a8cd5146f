"""Request handlers of the simulated company file, one per qbXML message kind.

Each handler takes (company, request element, session) and returns (body XML, extra Rs attributes,
(statusCode, statusSeverity, statusMessage)), or raises `Failure` with QuickBooks' code and text.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from erpsync.qbwc_bridge.qbxml._check import children
from erpsync.qbwc_bridge.qbxml.parse import record_to_dict
from erpsync.sandbox.quickbooks import _common as mod
from erpsync.sandbox.quickbooks._common import Failure, list_name

if TYPE_CHECKING:
    from erpsync.sandbox.quickbooks.company import CompanyFile

OK = (0, "Info", "Status OK")
EMPTY = (1, "Info", "A query request did not find a matching object in QuickBooks")


def _fail(code: int, message: str, severity: str = "Error") -> Failure:
    return Failure(code, message, severity)


def _not_found(object_id: str) -> Exception:
    tail = mod.NOT_FOUND_TAIL
    return _fail(3120, f'Object "{object_id}" specified in the request cannot be found.  {tail}')


def _query_missing(value: str) -> Exception:
    # QuickBooks fails the whole query (no partial result) when a named id or name does not exist.
    return _fail(
        500,
        f'The query request has not been fully completed. There was a required element ("{value}") '
        "that could not be found in QuickBooks.",
        "Warn",
    )


def fit(data: dict[str, Any], key: str) -> dict[str, Any]:
    """Keep only what the ``*Ret`` aggregate `key` can hold (Add-only fields are dropped)."""
    slots = children(key)
    out: dict[str, Any] = {}
    for name, value in data.items():
        child = slots.get(name)
        if child is None or value is None:
            continue
        if child.key is not None:
            if isinstance(value, list):
                out[name] = [fit(v, child.key) for v in value if isinstance(v, dict)]
            elif isinstance(value, dict):
                out[name] = fit(value, child.key)
        else:
            out[name] = value
    return out


def _trim(data: dict[str, Any], include: list[str] | None) -> dict[str, Any]:
    if not include:
        return data
    wanted = set(include)
    return {k: v for k, v in data.items() if k in wanted}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _lock_faults(company: CompanyFile, kind: str, obj_id: str | None, name: str) -> None:
    if obj_id and company.faults.take_locked(obj_id):
        raise _fail(
            3175,
            f'There was an error when modifying a {kind} list, element "{name}".  QuickBooks error message: '
            "This record is in use by another user.",
        )
    if company.faults.take("lock_writes"):
        raise _fail(
            3180,
            f'There was an error when saving a {kind} list, element "{name}".  QuickBooks error message: '
            "The list has been modified by another user and failed to acquire the lock.",
        )


# -- list objects --------------------------------------------------------------------------------------
def _parent(company: CompanyFile, kind: str, ref: Any) -> dict[str, Any] | None:
    if ref is None:
        return None
    family = mod.LIST_KINDS[kind]
    ref = ref if isinstance(ref, dict) else {"FullName": ref}
    got = (
        company.store.get(ref["ListID"])
        if ref.get("ListID")
        else company.store.by_name(family, ref.get("FullName", ""))
    )
    if got is None or mod.LIST_KINDS.get(got[0]) != family:
        label = {"entity": "Customers", "item": "Items", "account": "Accounts"}.get(family, family)
        shown = ref.get("ListID") or ref.get("FullName")
        raise _fail(
            3130,
            f'There is an invalid reference to a parent "{shown}" in the {label} list.  {mod.NOT_FOUND_TAIL}',
        )
    return got[1]


def _check_unique(company: CompanyFile, family: str, full_name: str, own_id: str | None = None) -> None:
    got = company.store.by_name(family, full_name)
    if got is not None and got[1]["ListID"] != own_id:
        raise _fail(3100, f'The name "{full_name}" of the list element is already in use.')


def _list_fields(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    if "BarCode" in fields and isinstance(fields["BarCode"], dict):
        fields = {**fields, "BarCodeValue": fields["BarCode"].get("BarCodeValue")}
    if kind == "Customer" and "OpenBalance" in fields:
        fields = {**fields, "Balance": fields["OpenBalance"], "TotalBalance": fields["OpenBalance"]}
    return fields


def list_add(kind: str):
    def handler(company: CompanyFile, rq, session):
        fields = record_to_dict(rq.find(f"{kind}Add"), f"{kind}Add")
        family = mod.LIST_KINDS[kind]
        name = fields["Name"]
        _lock_faults(company, kind, None, name)
        parent = _parent(company, kind, fields.get("ParentRef"))
        full_name = f"{parent['FullName']}:{name}" if parent else name
        _check_unique(company, family, full_name)
        now = company._now_text()
        data: dict[str, Any] = {
            "ListID": company._new_list_id(),
            "TimeCreated": now,
            "TimeModified": now,
            "EditSequence": company._edit_sequence(),
            "Name": name,
            "FullName": full_name,
            "IsActive": fields.get("IsActive", "true"),
            "ParentRef": {"ListID": parent["ListID"], "FullName": parent["FullName"]} if parent else None,
            "Sublevel": str(int(parent["Sublevel"]) + 1) if parent else "0",
        }
        if kind == "Customer":
            data.update(Balance="0.00", TotalBalance="0.00", JobStatus="None")
        if kind == "ItemInventory":
            data.update(QuantityOnHand="0", AverageCost="0.00", QuantityOnOrder="0", QuantityOnSalesOrder="0")
        if kind == "Account":
            data.update(Balance="0.00", TotalBalance="0.00")
        rest = {
            k: v for k, v in _list_fields(kind, fields).items() if k not in ("Name", "ParentRef", "IsActive")
        }
        data.update(company._resolve_refs(rest, kind))
        data = fit(data, f"{kind}Ret")
        company.store.put(data["ListID"], kind, family, full_name.lower(), data)
        include = _as_list(record_to_dict(rq, rq.tag).get("IncludeRetElement"))
        return company._render(f"{kind}Ret", _trim(data, include)), {}, OK

    return handler


def _load(company: CompanyFile, obj_id: str, kinds: tuple[str, ...]) -> dict[str, Any]:
    got = company.store.get(obj_id)
    if got is None or got[0] not in kinds:
        raise _not_found(obj_id)
    return got[1]


def _check_edit_sequence(data: dict[str, Any], given: str) -> None:
    if given != data["EditSequence"]:
        raise _fail(3200, f'The provided edit sequence "{given}" is out-of-date. ')


def _rename_children(company: CompanyFile, kind: str, family: str, old: str, new: str) -> None:
    for child_kind, record in company.store.all((kind,)):
        if record["FullName"].lower().startswith(old.lower() + ":"):
            record["FullName"] = new + record["FullName"][len(old) :]
            if record.get("ParentRef", {}).get("FullName", "").lower() == old.lower():
                record["ParentRef"]["FullName"] = new
            company.store.put(record["ListID"], child_kind, family, record["FullName"].lower(), record)


def list_mod(kind: str):
    def handler(company: CompanyFile, rq, session):
        fields = record_to_dict(rq.find(f"{kind}Mod"), f"{kind}Mod")
        family = mod.LIST_KINDS[kind]
        data = _load(company, fields["ListID"], (kind,))
        _lock_faults(company, kind, data["ListID"], data["FullName"])
        _check_edit_sequence(data, fields["EditSequence"])
        old_full = data["FullName"]
        if "ParentRef" in fields or "Name" in fields:
            parent = _parent(company, kind, fields["ParentRef"]) if "ParentRef" in fields else None
            if "ParentRef" not in fields and data.get("ParentRef"):
                parent = company.store.get(data["ParentRef"]["ListID"])[1]
            name = fields.get("Name", data["Name"])
            full_name = f"{parent['FullName']}:{name}" if parent else name
            _check_unique(company, family, full_name, data["ListID"])
            data.update(
                Name=name,
                FullName=full_name,
                ParentRef={"ListID": parent["ListID"], "FullName": parent["FullName"]} if parent else None,
                Sublevel=str(int(parent["Sublevel"]) + 1) if parent else "0",
            )
            if data["ParentRef"] is None:
                del data["ParentRef"]
        ret_slots = children(f"{kind}Ret")
        rest = {k: v for k, v in fields.items() if k not in ("ListID", "EditSequence", "Name", "ParentRef")}
        for name, value in company._resolve_refs(_list_fields(kind, rest), kind).items():
            target = name[:-3] if name.endswith("Mod") and name[:-3] in ret_slots else name
            data[target] = value  # aggregates are replaced whole, as QuickBooks clears what a Mod omits
        data["EditSequence"] = company._edit_sequence(data["EditSequence"])
        data["TimeModified"] = company._now_text()
        data = fit(data, f"{kind}Ret")
        company.store.put(data["ListID"], kind, family, data["FullName"].lower(), data)
        if old_full != data["FullName"]:
            _rename_children(company, kind, family, old_full, data["FullName"])
        return company._render(f"{kind}Ret", data), {}, OK

    return handler


def _owner_ids(fields: dict[str, Any]) -> list[str] | None:
    owners = _as_list(fields.get("OwnerID"))
    return owners or None


def _paged(company: CompanyFile, rq, session, ids: list[str], max_returned: int | None):
    """Apply MaxReturned and the iterator protocol to an ordered list of matching ids."""
    mode = rq.get("iterator")
    now = company.clock()  # the company file's clock: tests move it instead of sleeping
    for key in [k for k, v in company._iterators.items() if v["expires"] < now]:
        del company._iterators[key]
    if mode == "Continue" or mode == "Stop":
        iterator_id = rq.get("iteratorID") or ""
        state = company._iterators.get(iterator_id)
        if state is None or state["session"] != session or state["kind"] != rq.tag:
            raise _fail(3391, f'The iteratorID "{iterator_id}" is not valid.')
        if mode == "Stop":
            del company._iterators[iterator_id]
            return [], {"iteratorRemainingCount": 0, "iteratorID": iterator_id}
        ids = state["remaining"]
    else:
        iterator_id = None
    page = ids[:max_returned] if max_returned else ids
    rest = ids[len(page) :]
    attrs: dict[str, Any] = {}
    if mode in ("Start", "Continue"):
        if mode == "Start":
            iterator_id = "{" + str(uuid.uuid4()) + "}"
        if rest:
            company._iterators[iterator_id] = {
                "session": session,
                "remaining": rest,
                "kind": rq.tag,
                "expires": now + company.iterator_ttl_seconds,
            }
        else:
            company._iterators.pop(iterator_id, None)
        attrs = {"iteratorRemainingCount": len(rest), "iteratorID": iterator_id}
    return page, attrs


def _in_range(company: CompanyFile, value: str, start: str | None, end: str | None, parse) -> bool:
    if not start and not end:
        return True
    when = parse(value, company.tz)
    if start and when < parse(start, company.tz):
        return False
    return not (end and when > parse(end, company.tz))


def _parse_dt(text: str, tz: dt.tzinfo) -> dt.datetime:
    return mod.parse_when(text, tz)


def _name_matches(name: str, name_filter: dict[str, Any] | None, name_range: dict[str, Any] | None) -> bool:
    lowered = name.lower()
    if name_filter:
        wanted, how = name_filter["Name"].lower(), name_filter["MatchCriterion"]
        if how == "StartsWith" and not lowered.startswith(wanted):
            return False
        if how == "Contains" and wanted not in lowered:
            return False
        if how == "EndsWith" and not lowered.endswith(wanted):
            return False
    if name_range:
        if name_range.get("FromName") and lowered < name_range["FromName"].lower():
            return False
        if name_range.get("ToName") and lowered > name_range["ToName"].lower():
            return False
    return True


def list_query(kind: str):
    kinds = mod.ITEM_KINDS if kind == "Item" else (kind,)

    def handler(company: CompanyFile, rq, session):
        fields = record_to_dict(rq, rq.tag)
        if fields.get("ListID") or fields.get("FullName"):
            wanted_ids = []
            for list_id in _as_list(fields.get("ListID")):
                got = company.store.get(list_id)  # by key, as QuickBooks does: no list scan per query
                if got is None or got[0] not in kinds:
                    raise _query_missing(list_id)
                wanted_ids.append(list_id)
            full_names = _as_list(fields.get("FullName"))
            if full_names:
                names = {list_name(r).lower(): r["ListID"] for _, r in company.store.all(kinds)}
                for full_name in full_names:
                    if full_name.lower() not in names:
                        raise _query_missing(full_name)
                    wanted_ids.append(names[full_name.lower()])
            ids = list(dict.fromkeys(wanted_ids))
        else:
            records = company.store.all(kinds)
            active = fields.get("ActiveStatus", "ActiveOnly")
            ids = []
            for _, record in records:
                is_active = record.get("IsActive", "true") == "true"
                if (active == "ActiveOnly" and not is_active) or (active == "InactiveOnly" and is_active):
                    continue
                if not _in_range(
                    company,
                    record["TimeModified"],
                    fields.get("FromModifiedDate"),
                    fields.get("ToModifiedDate"),
                    _parse_dt,
                ):
                    continue
                if not _name_matches(
                    list_name(record), fields.get("NameFilter"), fields.get("NameRangeFilter")
                ):
                    continue
                ids.append(record["ListID"])
        max_returned = int(fields["MaxReturned"]) if fields.get("MaxReturned") else None
        meta = rq.get("metaData", "NoMetaData")
        if meta == "MetaDataOnly":
            return "", {"retCount": len(ids)}, OK  # a cheap count: no records at all
        page, attrs = _paged(company, rq, session, ids, max_returned)
        if meta == "MetaDataAndResponseData":
            attrs["retCount"] = len(ids)
        owners = _owner_ids(fields)
        include = _as_list(fields.get("IncludeRetElement"))
        parts = []
        for list_id in page:
            got = company.store.get(list_id)
            if got is None:
                continue  # deleted while an iterator was open
            record_kind, record = got
            if owners is not None:
                record = company._with_ext(record, owners)
            parts.append(company._render(f"{record_kind}Ret", _trim(record, include)))
        return "".join(parts), attrs, OK if parts else EMPTY

    return handler


# -- transactions --------------------------------------------------------------------------------------
def _item_price(item: dict[str, Any]) -> tuple[Decimal | None, str | None]:
    for agg in ("SalesOrPurchase", "SalesAndPurchase"):
        block = item.get(agg) or {}
        price = block.get("Price") or block.get("SalesPrice")
        if price:
            return Decimal(price), block.get("Desc") or block.get("SalesDesc")
    if item.get("SalesPrice"):
        return Decimal(item["SalesPrice"]), item.get("SalesDesc")
    return None, None


def _build_line(
    company: CompanyFile, kind: str, line: dict[str, Any], existing: dict[str, Any] | None
) -> dict[str, Any]:
    merged = {**(existing or {}), **{k: v for k, v in line.items() if k != "TxnLineID"}}
    if "ItemRef" not in merged:
        raise _fail(3140, f"There is a missing reference to an item in the {kind} line.")
    item_ref = company._resolve(merged["ItemRef"], "item", f"{kind} line")
    item = company.store.get(item_ref["ListID"])[1]
    price, desc = _item_price(item)
    merged = company._resolve_refs(merged, f"{kind} line")
    merged["ItemRef"] = item_ref
    if "Desc" not in merged and desc:
        merged["Desc"] = desc
    quantity = Decimal(merged["Quantity"]) if merged.get("Quantity") else None
    rate = Decimal(merged["Rate"]) if merged.get("Rate") else None
    if "Amount" in line or (existing is None and merged.get("Amount")):
        amount = mod.money(merged["Amount"])
    else:
        rate = rate if rate is not None else price
        amount = (quantity if quantity is not None else Decimal(1)) * (rate or Decimal(0))
    if rate is not None and "RatePercent" not in merged:
        merged["Rate"] = format(rate.normalize(), "f")
    merged["Amount"] = mod.fmt_money(amount)
    merged["TxnLineID"] = existing["TxnLineID"] if existing else company._new_txn_id()
    return fit(merged, f"{mod.TXN_KINDS[kind]}Ret")


def _totals(kind: str, data: dict[str, Any]) -> None:
    subtotal = sum(
        (mod.money(line.get("Amount")) for line in data.get(f"{mod.TXN_KINDS[kind]}Ret", [])), Decimal(0)
    )
    data.update(Subtotal=mod.fmt_money(subtotal), SalesTaxPercentage="0.00", SalesTaxTotal="0.00")
    if kind == "Invoice":
        applied = mod.money(data.get("AppliedAmount"))
        data.update(AppliedAmount=mod.fmt_money(applied), BalanceRemaining=mod.fmt_money(subtotal - applied))
        data["IsPaid"] = "true" if subtotal - applied <= 0 and subtotal > 0 else "false"
    else:
        data["TotalAmount"] = mod.fmt_money(subtotal)


def _adjust_balance(company: CompanyFile, customer: dict[str, Any] | None, delta: Decimal) -> None:
    """Move an open invoice amount onto the customer's Balance and up its parents' TotalBalance.

    Balances are computed by QuickBooks, so this does not touch the customer's EditSequence.
    """
    if not customer or not delta:
        return
    got = company.store.get(customer["ListID"])
    first = True
    while got is not None:
        kind, record = got
        if first:
            record["Balance"] = mod.fmt_money(mod.money(record.get("Balance")) + delta)
            first = False
        record["TotalBalance"] = mod.fmt_money(mod.money(record.get("TotalBalance")) + delta)
        company.store.put(record["ListID"], kind, "entity", record["FullName"].lower(), record)
        parent = record.get("ParentRef")
        got = company.store.get(parent["ListID"]) if parent else None


def _open_amount(kind: str, data: dict[str, Any]) -> Decimal:
    return mod.money(data.get("BalanceRemaining")) if kind == "Invoice" else Decimal(0)


def _default_account(company: CompanyFile, name: str) -> dict[str, str]:
    return company._resolve({"FullName": name}, "account", "transaction")


def txn_add(kind: str):
    def handler(company: CompanyFile, rq, session):
        line_name = mod.TXN_KINDS[kind]
        fields = record_to_dict(rq.find(f"{kind}Add"), f"{kind}Add")
        _lock_faults(company, kind, None, fields.get("RefNumber", ""))
        if fields.get(f"{line_name}GroupAdd"):
            raise _fail(3250, f"{line_name}GroupAdd (item groups) is not implemented by the simulator.")
        header = {k: v for k, v in fields.items() if k not in (f"{line_name}Add", "CustomerRef")}
        data: dict[str, Any] = {}
        customer = None
        if fields.get("CustomerRef") is not None:
            data["CustomerRef"] = company._resolve(fields["CustomerRef"], "entity", kind)
            customer = company.store.get(data["CustomerRef"]["ListID"])[1]
        elif kind != "SalesReceipt":
            raise _fail(3140, f"There is a missing reference to a customer in the {kind}.")
        data.update(company._resolve_refs(header, kind))
        lines = [_build_line(company, kind, line, None) for line in _as_list(fields.get(f"{line_name}Add"))]
        now = company._now_text()
        txn_date = fields.get("TxnDate") or company._now().date().isoformat()
        ref_number = fields.get("RefNumber") or str(company.store.next_counter(f"ref:{kind}", 1001))
        data.update(
            TxnID=company._new_txn_id(),
            TimeCreated=now,
            TimeModified=now,
            EditSequence=company._edit_sequence(),
            TxnNumber=str(company.store.next_counter("txn_number", 1)),
            TxnDate=txn_date,
            RefNumber=ref_number,
        )
        if customer and "BillAddress" not in data and customer.get("BillAddress"):
            data["BillAddress"] = customer["BillAddress"]
        if kind == "Invoice":
            data.setdefault("ARAccountRef", _default_account(company, "Accounts Receivable"))
            data.setdefault("DueDate", txn_date)
            data.update(IsPending=data.get("IsPending", "false"), IsFinanceCharge="false")
        if kind == "SalesReceipt":
            data.setdefault("DepositToAccountRef", _default_account(company, "Undeposited Funds"))
        if kind == "SalesOrder":
            data.update(IsManuallyClosed=data.get("IsManuallyClosed", "false"), IsFullyInvoiced="false")
        data[f"{line_name}Ret"] = lines
        _totals(kind, data)
        data = fit(data, f"{kind}Ret")
        company.store.put(data["TxnID"], kind, "txn", None, data)
        _adjust_balance(company, data.get("CustomerRef"), _open_amount(kind, data))
        return company._render(f"{kind}Ret", data), {}, OK

    return handler


def txn_mod(kind: str):
    def handler(company: CompanyFile, rq, session):
        line_name = mod.TXN_KINDS[kind]
        fields = record_to_dict(rq.find(f"{kind}Mod"), f"{kind}Mod")
        data = _load(company, fields["TxnID"], (kind,))
        _lock_faults(company, kind, data["TxnID"], data.get("RefNumber", ""))
        _check_edit_sequence(data, fields["EditSequence"])
        before_customer, before_open = data.get("CustomerRef"), _open_amount(kind, data)
        header = {k: v for k, v in fields.items() if k not in ("TxnID", "EditSequence", f"{line_name}Mod")}
        ret_slots = children(f"{kind}Ret")
        for name, value in company._resolve_refs(header, kind).items():
            target = name[:-3] if name.endswith("Mod") and name[:-3] in ret_slots else name
            data[target] = value
        if f"{line_name}Mod" in fields:
            existing = {line["TxnLineID"]: line for line in data.get(f"{line_name}Ret", [])}
            lines = []
            for line in _as_list(fields[f"{line_name}Mod"]):
                line_id = line.get("TxnLineID", "-1")
                if line_id == "-1":
                    lines.append(_build_line(company, kind, line, None))
                elif line_id in existing:
                    lines.append(_build_line(company, kind, line, existing[line_id]))
                else:
                    raise _not_found(line_id)
            data[f"{line_name}Ret"] = lines  # lines left out of a Mod are deleted, as in QuickBooks
        _totals(kind, data)
        data["EditSequence"] = company._edit_sequence(data["EditSequence"])
        data["TimeModified"] = company._now_text()
        data = fit(data, f"{kind}Ret")
        company.store.put(data["TxnID"], kind, "txn", None, data)
        _adjust_balance(company, before_customer, -before_open)
        _adjust_balance(company, data.get("CustomerRef"), _open_amount(kind, data))
        return company._render(f"{kind}Ret", data), {}, OK

    return handler


def txn_query(kind: str):
    def handler(company: CompanyFile, rq, session):
        line_name = mod.TXN_KINDS[kind]
        fields = record_to_dict(rq, rq.tag)
        records = company.store.all((kind,))
        by_id = {r["TxnID"]: r for _, r in records}
        if fields.get("TxnID"):
            ids = []
            for txn_id in _as_list(fields["TxnID"]):
                if txn_id not in by_id:
                    raise _query_missing(txn_id)
                ids.append(txn_id)
        else:
            refs = {r for r in _as_list(fields.get("RefNumber"))}
            refs_cs = set(_as_list(fields.get("RefNumberCaseSensitive")))
            modified = fields.get("ModifiedDateRangeFilter") or {}
            dates = fields.get("TxnDateRangeFilter") or {}
            entity = fields.get("EntityFilter") or {}
            ids = []
            for _, record in records:
                if refs and record.get("RefNumber", "").lower() not in {r.lower() for r in refs}:
                    continue
                if refs_cs and record.get("RefNumber") not in refs_cs:
                    continue
                if not _in_range(
                    company,
                    record["TimeModified"],
                    modified.get("FromModifiedDate"),
                    modified.get("ToModifiedDate"),
                    _parse_dt,
                ):
                    continue
                if not _in_range(
                    company, record["TxnDate"], dates.get("FromTxnDate"), dates.get("ToTxnDate"), _parse_dt
                ):
                    continue
                customer = record.get("CustomerRef") or {}
                if entity.get("ListID") and customer.get("ListID") != entity["ListID"]:
                    continue
                if (
                    entity.get("FullName")
                    and customer.get("FullName", "").lower() != entity["FullName"].lower()
                ):
                    continue
                ids.append(record["TxnID"])
        max_returned = int(fields["MaxReturned"]) if fields.get("MaxReturned") else None
        meta = rq.get("metaData", "NoMetaData")
        if meta == "MetaDataOnly":
            return "", {"retCount": len(ids)}, OK  # a cheap count: no records at all
        page, attrs = _paged(company, rq, session, ids, max_returned)
        if meta == "MetaDataAndResponseData":
            attrs["retCount"] = len(ids)
        owners = _owner_ids(fields)
        include = _as_list(fields.get("IncludeRetElement"))
        with_lines = fields.get("IncludeLineItems") in ("true", "1")
        parts = []
        for txn_id in page:
            got = company.store.get(txn_id)
            if got is None:
                continue
            record = dict(got[1])
            if not with_lines:
                record.pop(f"{line_name}Ret", None)
            if owners is not None:
                record = company._with_ext(record, owners)
            parts.append(company._render(f"{kind}Ret", _trim(record, include)))
        return "".join(parts), attrs, OK if parts else EMPTY

    return handler


# -- deletes -------------------------------------------------------------------------------------------
def list_del(company: CompanyFile, rq, session):
    fields = record_to_dict(rq, rq.tag)
    kind = fields["ListDelType"]
    if kind not in mod.LIST_KINDS:
        raise _fail(3250, f"Deleting a {kind} is not implemented by the QuickBooks simulator.")
    data = _load(company, fields["ListID"], (kind,))
    _lock_faults(company, kind, data["ListID"], data["FullName"])
    in_use = any(
        r["FullName"].lower().startswith(data["FullName"].lower() + ":")
        for _, r in company.store.all((kind,))
    )
    for _, txn in company.store.all(tuple(mod.TXN_KINDS)):
        line_name = mod.TXN_KINDS[_]
        if txn.get("CustomerRef", {}).get("ListID") == data["ListID"] or any(
            line.get("ItemRef", {}).get("ListID") == data["ListID"] for line in txn.get(f"{line_name}Ret", [])
        ):
            in_use = True
    if in_use:
        raise _fail(
            3170,
            f'There was an error when deleting a {kind} list, element "{data["FullName"]}".  '
            "QuickBooks error message: This list element is in use and cannot be deleted.",
        )
    now = company._now_text()
    tombstone = {
        "ListDelType": kind,
        "ListID": data["ListID"],
        "TimeCreated": data["TimeCreated"],
        "TimeDeleted": now,
        "FullName": data["FullName"],
    }
    company.store.delete(data["ListID"], kind, tombstone)
    body = "".join(
        f"<{k}>{_esc(tombstone[k])}</{k}>" for k in ("ListDelType", "ListID", "TimeDeleted", "FullName")
    )
    return body, {}, OK


def txn_del(company: CompanyFile, rq, session):
    fields = record_to_dict(rq, rq.tag)
    kind = fields["TxnDelType"]
    if kind not in mod.TXN_KINDS:
        raise _fail(3250, f"Deleting a {kind} is not implemented by the QuickBooks simulator.")
    data = _load(company, fields["TxnID"], (kind,))
    _lock_faults(company, kind, data["TxnID"], data.get("RefNumber", ""))
    now = company._now_text()
    tombstone = {
        "TxnDelType": kind,
        "TxnID": data["TxnID"],
        "TimeCreated": data["TimeCreated"],
        "TimeDeleted": now,
        "RefNumber": data.get("RefNumber"),
    }
    company.store.delete(data["TxnID"], kind, tombstone)
    _adjust_balance(company, data.get("CustomerRef"), -_open_amount(kind, data))
    body = "".join(
        f"<{k}>{_esc(tombstone[k])}</{k}>"
        for k in ("TxnDelType", "TxnID", "TimeDeleted", "RefNumber")
        if tombstone[k]
    )
    return body, {}, OK


def deleted_query(which: str):
    def handler(company: CompanyFile, rq, session):
        fields = record_to_dict(rq, rq.tag)
        kinds = tuple(_as_list(fields[f"{which}DelType"]))
        window = fields.get("DeletedDateRangeFilter") or {}
        parts = []
        for tomb in company.store.deleted(kinds):
            if _in_range(
                company,
                tomb["TimeDeleted"],
                window.get("FromDeletedDate"),
                window.get("ToDeletedDate"),
                _parse_dt,
            ):
                parts.append(company._render(f"{which}DeletedRet", tomb))
        return "".join(parts), {}, OK if parts else EMPTY

    return handler


def _esc(value: Any) -> str:
    from erpsync.qbwc_bridge.qbxml.build import escape_text

    return escape_text(str(value))


# -- DataExt -------------------------------------------------------------------------------------------
_LIST_EXT_FAMILY = {"Customer": "entity", "Item": "item", "Account": "account"}
_EXT_LIMITS = {"STR255TYPE": 255, "STR1024TYPE": 1024}


def data_ext_def_add(company: CompanyFile, rq, session):
    fields = record_to_dict(rq.find("DataExtDefAdd"), "DataExtDefAdd")
    owner, name = fields["OwnerID"], fields["DataExtName"]
    if company.store.get_def(owner, name) is not None:
        raise _fail(3100, f'The name "{name}" of the list element is already in use.')
    data = company._def_ret(owner, name, fields["DataExtType"], _as_list(fields.get("AssignToObject")))
    company.store.put_def(owner, name, data)
    return company._render("DataExtDefRet", fit(data, "DataExtDefRet")), {}, OK


def data_ext_def_query(company: CompanyFile, rq, session):
    fields = record_to_dict(rq, rq.tag)
    owner = fields.get("OwnerID")
    parts = [company._render("DataExtDefRet", fit(d, "DataExtDefRet")) for d in company.store.defs(owner)]
    return "".join(parts), {}, OK if parts else EMPTY


def _ext_target(company: CompanyFile, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if fields.get("ListDataExtType"):
        family = _LIST_EXT_FAMILY.get(fields["ListDataExtType"])
        ref = fields.get("ListObjRef") or {}
        if family is None:
            raise _fail(3250, f"DataExt on {fields['ListDataExtType']} is not implemented by the simulator.")
        got = (
            company.store.get(ref["ListID"])
            if ref.get("ListID")
            else company.store.by_name(family, ref.get("FullName", ""))
        )
        if got is None or mod.LIST_KINDS.get(got[0]) != family:
            raise _not_found(ref.get("ListID") or ref.get("FullName", ""))
        return got[1]["ListID"], {
            "ListDataExtType": fields["ListDataExtType"],
            "ListObjRef": {"ListID": got[1]["ListID"], "FullName": got[1]["FullName"]},
        }
    if fields.get("TxnDataExtType"):
        got = company.store.get(fields["TxnID"])
        if got is None or got[0] != fields["TxnDataExtType"]:
            raise _not_found(fields["TxnID"])
        return fields["TxnID"], {"TxnDataExtType": fields["TxnDataExtType"], "TxnID": fields["TxnID"]}
    if fields.get("OtherDataExtType") == "Company":
        return "company", {"OtherDataExtType": "Company"}
    raise _fail(3250, "This DataExt target is not implemented by the simulator.")


def data_ext_set(which: str):
    def handler(company: CompanyFile, rq, session):
        fields = record_to_dict(rq.find(f"DataExt{which}"), f"DataExt{which}")
        owner, name = fields["OwnerID"], fields["DataExtName"]
        definition = company.store.get_def(owner, name)
        if definition is None:
            raise _not_found(name)
        object_id, _target = _ext_target(company, fields)
        value = fields.get("DataExtValue", "")
        limit = _EXT_LIMITS.get(definition["DataExtType"])
        if limit is not None and len(value) > limit:
            raise _fail(3070, f'The string "{value}" in the field "DataExtValue" is too long.')
        if definition["DataExtType"] == "INTTYPE" and not value.lstrip("-").isdigit():
            raise _fail(3020, f'"{value}" is not a valid integer for DataExt "{name}".')
        if which == "Add" and company.store.get_ext(owner, name, object_id) is not None:
            raise _fail(
                3180,
                f'There was an error when saving a data extension "{name}".  QuickBooks error message: '
                "A value already exists for this object; use DataExtMod.",
            )
        company.store.set_ext(owner, name, object_id, value)
        ret = {"DataExtName": name, "DataExtType": definition["DataExtType"], "DataExtValue": value}
        if owner != "0":
            ret = {"OwnerID": owner, **ret}
        return company._render("DataExtRet", ret), {}, OK

    return handler


def data_ext_del(company: CompanyFile, rq, session):
    fields = record_to_dict(rq.find("DataExtDel"), "DataExtDel")
    owner, name = fields["OwnerID"], fields["DataExtName"]
    if company.store.get_def(owner, name) is None:
        raise _not_found(name)
    object_id, target = _ext_target(company, fields)
    if company.store.get_ext(owner, name, object_id) is None:
        raise _not_found(name)
    company.store.set_ext(owner, name, object_id, None)
    ret = {"OwnerID": owner, "DataExtName": name, **target, "TimeDeleted": company._now_text()}
    return company._render("DataExtDelRet", fit(ret, "DataExtDelRet")), {}, OK


# -- host and company ----------------------------------------------------------------------------------
def host_query(company: CompanyFile, rq, session):
    from erpsync.sandbox.quickbooks.versions import host_product

    product, major = host_product(company.max_version)
    data = {
        "ProductName": product,
        "MajorVersion": major,
        "MinorVersion": "0",
        "Country": "US",
        "SupportedQBXMLVersion": list(company.supported_versions),
        "IsAutomaticLogin": "false",
        "QBFileMode": "SingleUser",
    }
    return company._render("HostRet", data), {}, OK


def company_query(company: CompanyFile, rq, session):
    fields = record_to_dict(rq, rq.tag)
    data: dict[str, Any] = {
        "IsSampleCompany": "false",
        "CompanyName": company.company_name,
        "LegalCompanyName": f"{company.company_name} LLC",
        "Address": {
            "Addr1": "100 Harbor Way",
            "City": "Mountain View",
            "State": "CA",
            "PostalCode": "94043",
            "Country": "US",
        },
        "Phone": "650-555-0100",
        "Email": "books@sandbox.example",
        "FirstMonthFiscalYear": "January",
        "FirstMonthIncomeTaxYear": "January",
        "TaxForm": "Form1120",
    }
    owners = _as_list(fields.get("OwnerID"))
    if owners:
        exts = []
        for owner, name, value in company.store.exts_for("company", owners):
            definition = company.store.get_def(owner, name) or {}
            ext = {
                "DataExtName": name,
                "DataExtType": definition.get("DataExtType", "STR255TYPE"),
                "DataExtValue": value,
            }
            exts.append({"OwnerID": owner, **ext} if owner != "0" else ext)
        data["DataExtRet"] = exts
    return company._render("CompanyRet", _trim(data, _as_list(fields.get("IncludeRetElement")))), {}, OK


def preferences_query(company: CompanyFile, rq, session):
    data = {
        "AccountingPreferences": {
            "IsUsingAccountNumbers": "false",
            "IsRequiringAccounts": "true",
            "IsUsingClassTracking": "false",
            "IsUsingAuditTrail": "true",
            "IsAssigningJournalEntryNumbers": "true",
        },
        "MultiCurrencyPreferences": {"IsMultiCurrencyOn": "false"},
        "PurchasesAndVendorsPreferences": {
            "IsUsingInventory": "true",
            "DaysBillsAreDue": "10",
            "IsAutomaticallyUsingDiscounts": "false",
        },
        "SalesAndCustomersPreferences": {
            "IsTrackingReimbursedExpensesAsIncome": "false",
            "IsAutoApplyingPayments": "true",
        },
        "CurrentAppAccessRights": {
            "IsAutomaticLoginAllowed": "false",
            "IsPersonalDataAccessAllowed": "false",
        },
    }
    return company._render("PreferencesRet", fit(data, "PreferencesRet")), {}, OK


HANDLERS: dict[str, Any] = {
    "HostQuery": host_query,
    "CompanyQuery": company_query,
    "PreferencesQuery": preferences_query,
    "ListDel": list_del,
    "TxnDel": txn_del,
    "ListDeletedQuery": deleted_query("List"),
    "TxnDeletedQuery": deleted_query("Txn"),
    "DataExtDefAdd": data_ext_def_add,
    "DataExtDefQuery": data_ext_def_query,
    "DataExtAdd": data_ext_set("Add"),
    "DataExtMod": data_ext_set("Mod"),
    "DataExtDel": data_ext_del,
    "ItemQuery": list_query("Item"),
}
for _kind in ("Customer", "ItemService", "ItemNonInventory", "ItemInventory", "Account"):
    HANDLERS[f"{_kind}Add"] = list_add(_kind)
    HANDLERS[f"{_kind}Query"] = list_query(_kind)
    if _kind != "Account":
        HANDLERS[f"{_kind}Mod"] = list_mod(_kind)
HANDLERS["SalesRepQuery"] = list_query("SalesRep")  # reps are seeded; SalesRepAdd needs an employee list
for _kind in ("SalesOrder", "Invoice", "SalesReceipt"):
    HANDLERS[f"{_kind}Add"] = txn_add(_kind)
    HANDLERS[f"{_kind}Mod"] = txn_mod(_kind)
    HANDLERS[f"{_kind}Query"] = txn_query(_kind)
