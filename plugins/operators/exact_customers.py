"""The orders flow's customer step: every order's customer exists in Exact before orders are mapped.

Sits between the source quality check and the map step of `sf_orders_to_exact`:

    check_source >> EnsureExactCustomersOperator(task_id="ensure_customers", manifest=check_source.output) >> map

It reads the staged Salesforce order chunks (only the columns it needs), keeps one row per e-mail
(trimmed, case-insensitive; the last order's values win, they are the newest), and calls
`ExactOnlineAdapter.ensure_customers`: find by e-mail, else create a company debtor with its contact
or a person debtor, and update a changed address or phone. A rerun finds every customer and creates
nothing. Orders without an e-mail are left to the mapping's default debtor.

Errors: a bad row (no name, an invalid e-mail or country, a refusal by Exact) is counted and listed
in the returned manifest and the log; the other customers carry on. Configuration errors and
refusals for good fail the task without retries; transient errors (including the daily rate limit)
propagate to the task's retry budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from erpsync.errors import ConfigError, FatalSourceError

__all__ = ["DEFAULT_CUSTOMER_COLUMNS", "EnsureExactCustomersOperator", "ExactOrderStepsOperator"]

#: ensure_customers column -> column of the staged Salesforce order extract (dotted relationship paths).
DEFAULT_CUSTOMER_COLUMNS: dict[str, str] = {
    "Email": "BillToContact.Email",
    "CompanyName": "Account.Name",
    "FirstName": "BillToContact.FirstName",
    "LastName": "BillToContact.LastName",
    "Phone": "BillToContact.Phone",
    "Street": "BillingStreet",
    "City": "BillingCity",
    "PostalCode": "BillingPostalCode",
    "State": "BillingState",
    "Country": "BillingCountry",  # a name ("Netherlands") or an ISO code; Exact gets the code
}


class EnsureExactCustomersOperator(BaseOperator):
    """Find or create each order's customer in Exact Online (company debtor + contact, or person).

    :param manifest: the extract (or source check) manifest of the Salesforce orders.
    :param flow: the orders flow; when given, its mapping's source filter (e.g. Status in
        [Activated]) picks the orders whose customers are ensured, and its source key names the orders.
    :param mappings_dir: folder of the mapping files (default ERPSYNC_MAPPINGS_DIR, then include/mappings).
    :param source_filter: column -> allowed values, applied to the orders (overrides the mapping's).
    :param columns: ensure_customers column -> staged column; merged over `DEFAULT_CUSTOMER_COLUMNS`
        (map a name to None to leave it out). `Email` is required.
    :param key_column: the staged column that identifies an order (`_source_key` of the results).
    :param conn_id: the Exact Online connection.
    :param adapter: registry name or "module:Class" of the Exact adapter.
    :param adapter_kwargs: extra keyword arguments for the adapter (division, token store, ...).
    :param max_errors: errors listed in the returned manifest (the log lists them all).
    """

    template_fields: Sequence[str] = (
        "manifest",
        "flow",
        "mappings_dir",
        "columns",
        "conn_id",
        "adapter_kwargs",
    )
    ui_color = "#fdf1e3"

    def __init__(
        self,
        *,
        manifest: Any,
        flow: str | None = None,
        mappings_dir: str | None = None,
        source_filter: dict[str, list] | None = None,
        columns: dict[str, str | None] | None = None,
        key_column: str | None = None,
        conn_id: str = "exact_online_default",
        adapter: str = "erpsync.adapters.exact_online:ExactOnlineAdapter",
        adapter_kwargs: dict | None = None,
        max_errors: int = 20,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if manifest is None:
            raise ValueError(f"{self.task_id}: manifest is required (pass the upstream task's .output)")
        if columns is not None and not isinstance(columns, dict):
            raise ValueError(f"{self.task_id}: columns must be a dict, got {type(columns).__name__}")
        merged = {**DEFAULT_CUSTOMER_COLUMNS, **(columns or {})}
        if not merged.get("Email"):
            raise ValueError(f"{self.task_id}: columns must name the staged column holding Email")
        if adapter_kwargs is not None and not isinstance(adapter_kwargs, dict):
            raise ValueError(f"{self.task_id}: adapter_kwargs must be a dict")
        if max_errors < 0:
            raise ValueError(f"{self.task_id}: max_errors must not be negative, got {max_errors}")
        if source_filter is not None and not all(isinstance(v, list) for v in source_filter.values()):
            raise ValueError(f"{self.task_id}: source_filter must map columns to lists of allowed values")
        self.manifest = manifest
        self.flow = flow
        self.mappings_dir = mappings_dir
        self.source_filter = source_filter
        self.columns = columns
        self.key_column = key_column
        self.conn_id = conn_id
        self.adapter = adapter
        self.adapter_kwargs = adapter_kwargs
        self.max_errors = max_errors

    def execute(self, context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return self.run_step()
        except (ConfigError, FatalSourceError) as exc:
            # A retry cannot fix these: fail now, with the error's own words.
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    def run_step(self) -> dict[str, Any]:
        """Read the staged orders, ensure their customers, return the small manifest."""
        from erpsync.adapters import get_adapter

        frame = self.customer_rows()
        adapter = get_adapter(self.adapter, conn_id=self.conn_id, **(self.adapter_kwargs or {}))
        if not hasattr(adapter, "ensure_customers"):
            raise ConfigError(
                f"adapter {self.adapter!r} has no ensure_customers (use the Exact Online adapter)"
            )
        results = adapter.ensure_customers(frame) if len(frame) else frame.iloc[0:0]
        return self.summarize(results, adapter.call_log.summary())

    def _source(self) -> tuple[str, dict[str, list]]:
        """The order key column and the status filter: arguments > the flow's mapping > defaults."""
        key, filters = self.key_column, self.source_filter
        if self.flow:
            from erpsync.mapping import load_flow

            source = load_flow(self.flow, self.mappings_dir).source
            key = key or source.key
            filters = source.filter if filters is None else filters
        return key or "Id", dict(filters or {})

    def customer_rows(self):
        """Return one row per customer (folded e-mail) from the staged chunks, last order winning."""
        import pandas as pd

        from erpsync.chunks import Manifest, read_chunks

        manifest = Manifest.from_xcom(self.manifest, where=f"{self.task_id} input")
        key_column, filters = self._source()
        wanted = {k: v for k, v in {**DEFAULT_CUSTOMER_COLUMNS, **(self.columns or {})}.items() if v}
        available = set(manifest.columns)
        missing = [v for v in [key_column, wanted["Email"], *filters] if v not in available]
        if missing and manifest.rows:
            raise ConfigError(
                f"the staged orders have no column(s) {', '.join(missing)}; "
                f"staged columns: {', '.join(manifest.columns)}",
                where=self.task_id,
            )
        present = {k: v for k, v in wanted.items() if v in available}
        absent = sorted(set(wanted) - set(present))
        if absent:
            self.log.info("Staged orders lack %s; those customer fields stay as they are in Exact", absent)
        read = list(dict.fromkeys([key_column, *present.values(), *filters]))
        frames = []
        filtered = 0
        for chunk in read_chunks(manifest, columns=read):
            if filters:
                keep = pd.Series(True, index=chunk.index)
                for column, allowed in filters.items():
                    keep &= chunk[column].isin(allowed)
                filtered += int((~keep).sum())
                chunk = chunk[keep.to_numpy()]
            out = pd.DataFrame({"_source_key": chunk[key_column].astype(str).to_numpy()})
            for name, column in present.items():
                out[name] = chunk[column].to_numpy(dtype=object)
            frames.append(out)
        columns = ["_source_key", *present]
        if not frames:
            return pd.DataFrame(columns=columns)
        rows = pd.concat(frames, ignore_index=True)
        email = rows["Email"].map(
            lambda v: " ".join(str(v).split()).casefold() if isinstance(v, str) else None
        )
        with_email = rows[email.notna().to_numpy() & email.ne("").to_numpy()]
        folded = email[with_email.index]
        kept = with_email[~folded.duplicated(keep="last").to_numpy()]
        without = len(rows) - len(with_email)
        self.log.info(
            "%d staged orders (%d more left out by the source filter): %d distinct customer e-mails, "
            "%d orders without e-mail (default debtor)",
            len(rows),
            filtered,
            len(kept),
            without,
        )
        self._orders, self._without_email, self._filtered = len(rows), without, filtered
        return kept.reset_index(drop=True)

    def summarize(self, results, calls: dict[str, Any]) -> dict[str, Any]:
        counts = {a: 0 for a in ("created", "updated", "unchanged", "failed", "skipped")}
        for action, n in results["action"].value_counts().items() if len(results) else []:
            counts[str(action)] = counts.get(str(action), 0) + int(n)
        errors = [str(e) for e in results.loc[results["action"] == "failed", "error"]] if len(results) else []
        for line in errors:
            self.log.warning("%s", line)
        by_contact = int((results["matched_by"] == "contact").sum()) if len(results) else 0
        if by_contact:
            self.log.warning(
                "%d customers were found through a contact's e-mail; their account's own e-mail differs, "
                "so the orders mapping's debtor lookup (crm/Accounts.Email) will not match them",
                by_contact,
            )
        summary = {
            **counts,
            "customers": len(results),
            "orders": getattr(self, "_orders", 0),
            "orders_without_email": getattr(self, "_without_email", 0),
            "orders_filtered": getattr(self, "_filtered", 0),
            "matched_by_contact": by_contact,
            "errors": errors[: self.max_errors],
            "calls": calls,
        }
        self.log.info(
            "Customers in Exact: %d created, %d updated, %d unchanged, %d failed",
            counts["created"],
            counts["updated"],
            counts["unchanged"],
            counts["failed"],
        )
        return summary


#: Quarantine stages a skipped order leaves (it needs none of them any more).
_LATER_STAGES = ("customer", "delivery_address", "map", "check_target", "plan", "upsert")

#: The staged column the delivery address step fills (the mapping's `source.added`).
DELIVERY_ADDRESS_COLUMN = "_exact_delivery_address"

#: ensure_delivery_addresses column -> column of the staged Salesforce order extract.
DEFAULT_DELIVERY_COLUMNS: dict[str, str] = {
    "Street": "ShippingStreet",
    "City": "ShippingCity",
    "PostalCode": "ShippingPostalCode",
    "State": "ShippingState",
    "Country": "ShippingCountry",
}


class ExactOrderStepsOperator(EnsureExactCustomersOperator):
    """The orders flow's steps before mapping, in the APIcenter seed's order; passes the orders on.

    For each staged order, in this order:

    1. **status**: only orders in the trigger form's `statuses` go on (the extract already asks
       Salesforce for those; orders retried from quarantine are read by key and are filtered here).
       The param is the one source of truth: the mapping has no status filter of its own.
    2. **order exists?** The order number (the mapping's identity source) is looked up as `YourRef`
       in Exact, among the sales orders and the sales invoices (the flow books either, setting
       `sales_document`; switching it never books an order twice). With `existing_orders: skip` (default) an existing order is skipped here: no
       customer work, no mapping, and any quarantine it had is closed. With `update` it goes on
       (to have its header updated) but its customer is not touched either.
    3. **every product exists?** The codes of the lines' required lookups (`Item` by
       `Product2.ProductCode`) are looked up in Exact; an order with an unknown product goes on to
       the map step, which quarantines it naming the code, and its customer is not created or changed.
    4. **customer**: found by e-mail, created (company debtor with contact, or person debtor) or
       updated, through `ExactOnlineAdapter.ensure_customers`. An order without an e-mail goes on to
       the mapping's default debtor; an order whose e-mail is invalid or whose customer step failed
       is quarantined (stage `customer`, the error code as rule) and does not go on, so it is never
       booked on the default debtor. It is retried on the next run.
    5. **delivery address**: the order's shipping address becomes a delivery address (crm/Addresses,
       type 4) of the customer's account, found or created (`ensure_delivery_addresses`; a Dutch
       street is split into street / number / addition and written normalised), and its ID goes to
       the map step in the staged column `_exact_delivery_address` (the order's `DeliveryAddress`).
       An order without a shipping address, or booked on the default debtor, gets none: Exact uses
       the account's own. A refused address quarantines the order (stage `delivery_address`).

    Returns the manifest of the orders that go on (what the map step reads); its extra holds the
    customer counts (created, updated, unchanged, failed), the order counts (`filtered`,
    `skipped_existing`, `unknown_product`, `without_email`, `customer_failed`, `passed`), the first
    errors and the calls. Retry-safe: the output is rewritten whole, and a rerun finds the customers
    an earlier try created.

    :param flow: the orders flow (its mapping names the identity, the lines and their lookups).
    :param statuses: allowed order statuses (default: the DAG param `statuses`; none: no filter).
    :param status_column: the staged column holding the status.
    :param existing_orders: "skip" or "update" (default: the DAG param `existing_orders`, else skip).
    :param state_url: state store URL (default ERPSYNC_STATE_URL).
    """

    template_fields: Sequence[str] = (
        *EnsureExactCustomersOperator.template_fields,
        "statuses",
        "existing_orders",
        "state_url",
    )

    def __init__(
        self,
        *,
        flow: str,
        statuses: list[str] | str | None = None,
        status_column: str = "Status",
        existing_orders: str | None = None,
        state_url: str | None = None,
        **kwargs,
    ):
        if kwargs.get("source_filter") is not None:
            raise ValueError("the order steps take their status filter from `statuses`, not source_filter")
        super().__init__(flow=flow, **kwargs)
        if (
            existing_orders is not None
            and existing_orders not in ("skip", "update")
            and "{{" not in existing_orders
        ):
            raise ValueError(
                f"{self.task_id}: existing_orders must be 'skip' or 'update', got {existing_orders!r}"
            )
        self.statuses = statuses
        self.status_column = status_column
        self.existing_orders = existing_orders
        self.state_url = state_url

    def execute(self, context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return self.run_steps(context)
        except (ConfigError, FatalSourceError) as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    def _settings(self, context) -> tuple[list[str] | None, str]:
        params = context.get("params") or {}
        statuses = self.statuses if self.statuses is not None else params.get("statuses")
        if isinstance(statuses, str):
            statuses = [s.strip() for s in statuses.split(",") if s.strip()]
        if statuses is not None and (not isinstance(statuses, list) or not statuses):
            raise ConfigError(f"statuses must be a non-empty list of order statuses, got {statuses!r}")
        existing = self.existing_orders or params.get("existing_orders") or "skip"
        if existing not in ("skip", "update"):
            raise ConfigError(f"existing_orders must be 'skip' or 'update', got {existing!r}")
        return statuses, existing

    def run_steps(self, context) -> dict[str, Any]:
        """Run the four steps chunk by chunk; write the orders that go on; return their manifest."""
        from erpsync.adapters import get_adapter
        from erpsync.chunks import ChunkWriter, Manifest, read_chunks
        from erpsync.mapping import load_flow
        from erpsync.staging import run_staging_dir
        from erpsync.state import StateStore

        statuses, existing = self._settings(context)
        mapping = load_flow(self.flow, self.mappings_dir)
        manifest = Manifest.from_xcom(self.manifest, where=f"{self.task_id} input")
        identity = mapping.fields[mapping.target.identity]
        if identity.kind != "from":
            raise ConfigError(
                f"the order steps need the identity {mapping.target.identity} mapped with `from:`",
                where=self.flow,
            )
        needed = [mapping.source.key, identity.source, *([self.status_column] if statuses else [])]
        missing = [c for c in needed if c not in manifest.columns]
        if missing and manifest.rows:
            raise ConfigError(
                f"the staged orders have no column(s) {', '.join(missing)}; staged columns: "
                f"{', '.join(manifest.columns)}",
                where=self.task_id,
            )
        run_id = context["run_id"]
        store = StateStore(self.state_url) if self.state_url else StateStore()
        writer = ChunkWriter(run_staging_dir(context["ti"].dag_id, run_id), "order_steps")
        adapter = get_adapter(self.adapter, conn_id=self.conn_id, **(self.adapter_kwargs or {}))
        counts = dict.fromkeys(
            (
                "filtered",
                "skipped_existing",
                "unknown_product",
                "without_email",
                "customer_failed",
                "delivery_address_failed",
                "passed",
            ),
            0,
        )
        customer_counts = dict.fromkeys(("created", "updated", "unchanged", "failed"), 0)
        errors: list[str] = []
        for chunk in read_chunks(manifest):
            kept = self._one_chunk(
                chunk, mapping, identity.source, statuses, existing, adapter, store, run_id,
                counts, customer_counts, errors,
            )  # fmt: skip
            writer.write(kept)
        for line in errors:
            self.log.warning("%s", line)
        self.log.info("Order steps: %s; customers in Exact: %s", counts, customer_counts)
        out = writer.close(
            columns=list(dict.fromkeys([*manifest.columns, DELIVERY_ADDRESS_COLUMN])),
            **customer_counts,
            orders=counts,
            existing_orders=existing,
            statuses=statuses,
            errors=errors[: self.max_errors],
            calls=adapter.call_log.summary(),
        )
        return out.to_xcom()

    def _one_chunk(self, chunk, mapping, ident_col, statuses, existing, adapter, store, run_id, counts,
                   customer_counts, errors):  # fmt: skip
        import numpy as np

        key_col = mapping.source.key
        keys = chunk[key_col].astype(str).to_numpy()
        go = np.ones(len(chunk), dtype=bool)
        settled: list[str] = []  # orders that need nothing more: their quarantine closes
        # 1. status
        if statuses:
            wrong = ~chunk[self.status_column].isin(statuses).to_numpy()
            counts["filtered"] += int(wrong.sum())
            settled += keys[wrong].tolist()
            go &= ~wrong
        # 2. order exists?
        refs = chunk[ident_col].where(chunk[ident_col].notna(), None)
        wanted = [str(v) for v in refs[go] if v is not None and str(v).strip()]
        held, elsewhere = set(), set()
        if wanted and mapping.target.identity == "YourRef" and hasattr(adapter, "sales_document_refs"):
            # in Exact as a sales order or a sales invoice, whichever the flow books now; one held as
            # the other document is never updated (nor booked again) as this one
            docs = adapter.sales_document_refs(wanted)
            held = set(docs)
            elsewhere = {r for r, kind in docs.items() if kind != getattr(adapter, "sales_document", "order")}
        elif wanted:
            found = adapter.read_by_keys(mapping.target.object, mapping.target.identity, wanted,
                                         columns=[mapping.target.identity])  # fmt: skip
            held = {str(v).strip().casefold() for v in found[mapping.target.identity] if v is not None}
        exists = np.array([go[i] and v is not None and str(v).strip().casefold() in held for i, v in enumerate(refs)],
                          dtype=bool)  # fmt: skip
        if existing == "skip" or elsewhere:
            skip = exists if existing == "skip" else np.array(
                [go[i] and v is not None and str(v).strip().casefold() in elsewhere for i, v in enumerate(refs)],
                dtype=bool,
            )  # fmt: skip
            counts["skipped_existing"] += int(skip.sum())
            settled += keys[skip].tolist()
            go &= ~skip
        for stage in _LATER_STAGES:
            store.resolve_quarantine(self.flow, stage=stage, keys=settled, run_id=run_id)
        # 3. every product exists?
        unknown = self._unknown_products(chunk, mapping, adapter, go & ~exists)
        counts["unknown_product"] += int(unknown.sum())
        # 4. customer, only for orders that will be posted
        customer = go & ~exists & ~unknown
        self.key_column = key_col
        drop, accounts = self._customers(chunk, customer, adapter, store, run_id, counts, customer_counts,
                                         errors)  # fmt: skip
        go &= ~drop
        # 5. delivery address, under the customer's account
        chunk = chunk.assign(**{DELIVERY_ADDRESS_COLUMN: None})
        go &= ~self._delivery_addresses(chunk, go & ~exists, accounts, adapter, store, run_id, counts, errors)
        counts["passed"] += int(go.sum())
        return chunk[go].reset_index(drop=True)

    def _delivery_addresses(self, chunk, rows, accounts, adapter, store, run_id, counts, errors):
        """Fill `_exact_delivery_address` for `rows` that have a customer account; return rows to drop."""
        import numpy as np
        import pandas as pd

        from erpsync.state import QuarantineRecord

        drop = np.zeros(len(chunk), dtype=bool)
        key_col = self.key_column or "Id"
        positions = [p for p in np.flatnonzero(rows) if accounts.get(int(p))]
        if not positions or not hasattr(adapter, "ensure_delivery_addresses"):
            return drop
        sub = chunk.iloc[positions]
        frame = pd.DataFrame({"_source_key": sub[key_col].astype(str).to_numpy(),
                              "Account": [accounts[int(p)] for p in positions]})  # fmt: skip
        for name, column in DEFAULT_DELIVERY_COLUMNS.items():
            frame[name] = sub[column].to_numpy(dtype=object) if column in sub.columns else None
        results = adapter.ensure_delivery_addresses(frame)
        column = chunk.columns.get_loc(DELIVERY_ADDRESS_COLUMN)
        quarantine, fine = [], []
        streets = frame["Street"].tolist()
        for pos, street, r in zip(positions, streets, results.to_dict("records"), strict=True):
            if r["action"] == "failed":
                drop[pos] = True
                counts["delivery_address_failed"] += 1
                errors.append(str(r["error"]))
                quarantine.append(
                    QuarantineRecord(
                        source_key=r["_source_key"],
                        stage="delivery_address",
                        rule=str(r["error_code"] or "delivery_address_failed"),
                        column=DEFAULT_DELIVERY_COLUMNS["Street"],
                        value=None if street is None or pd.isna(street) else str(street),
                        message=f"{r['error']} (the order is not booked without its delivery address)",
                        payload={},
                    )
                )
            else:
                fine.append(r["_source_key"])
                chunk.iat[pos, column] = r["address_id"]
        store.quarantine(self.flow, quarantine, run_id=run_id)
        store.resolve_quarantine(self.flow, stage="delivery_address", keys=fine, run_id=run_id)
        return drop

    def _unknown_products(self, chunk, mapping, adapter, rows):
        """Rows (of those in `rows`) with a line whose required lookup finds nothing in Exact."""
        import numpy as np

        from erpsync.mapping._rowwise import _get

        out = np.zeros(len(chunk), dtype=bool)
        lines = mapping.lines
        if lines is None or lines.source not in chunk.columns or not rows.any():
            return out
        checks = [
            (f.by[0], mapping.lookups[f.lookup])
            for f in lines.fields.values()
            if f.kind == "lookup" and f.required and len(f.by) == 1 and f.default is None
            and mapping.lookups[f.lookup].object.lower() == "logistics/items"  # the seed: "every product"
            and len(mapping.lookups[f.lookup].key) == 1
        ]  # fmt: skip
        per_row: list[list[dict]] = []
        for value in chunk[lines.source].tolist():
            if isinstance(value, dict):
                value = value.get("records")
            per_row.append([r for r in (list(value) if value is not None else []) if isinstance(r, dict)])
        for path, lookup in checks:
            codes = {i: [] for i in range(len(chunk))}
            for i, recs in enumerate(per_row):
                if rows[i]:
                    for rec in recs:
                        try:
                            v = _get(rec, path)
                        except KeyError:
                            v = None
                        codes[i].append(None if v is None else str(v).strip())
            wanted = sorted({c for cs in codes.values() for c in cs if c})
            found = adapter.read_by_keys(
                lookup.object, lookup.key[0], wanted, columns=[lookup.key[0], lookup.value]
            )
            fold = (lambda s: s.casefold()) if lookup.casefold else (lambda s: s)
            have = {fold(str(v).strip()) for v in found[lookup.key[0]] if v is not None}
            for i, cs in codes.items():
                if rows[i] and any(c is None or fold(c) not in have for c in cs):
                    out[i] = True
        return out

    def _customers(self, chunk, rows, adapter, store, run_id, counts, customer_counts, errors):
        """Ensure the customers of `rows`; return the rows to drop (their customer step failed)."""
        import numpy as np
        import pandas as pd

        from erpsync.state import QuarantineRecord

        drop = np.zeros(len(chunk), dtype=bool)
        accounts: dict[int, str] = {}
        if not rows.any():
            return drop, accounts
        wanted = {k: v for k, v in {**DEFAULT_CUSTOMER_COLUMNS, **(self.columns or {})}.items() if v}
        key_col = self.key_column or "Id"
        sub = chunk[rows]
        frame = pd.DataFrame({"_source_key": sub[key_col].astype(str).to_numpy()})
        for name, column in wanted.items():
            frame[name] = sub[column].to_numpy(dtype=object) if column in sub.columns else None
        # The newest order's values win for a customer several orders share: ensure_customers takes
        # the first row per e-mail, so hand them over newest (last staged) first.
        results = adapter.ensure_customers(frame.iloc[::-1].reset_index(drop=True))
        by_key = {str(r["_source_key"]): r for r in results.to_dict("records")}
        seen_mail: dict[str, str] = {}
        quarantine, fine = [], []
        positions = np.flatnonzero(rows)
        for pos, key in zip(positions, frame["_source_key"], strict=True):
            r = by_key[key]
            if r["action"] == "skipped":  # no e-mail: the mapping's default debtor
                counts["without_email"] += 1
                fine.append(key)
                continue
            if r["Email"] and r["action"] != "failed":
                seen_mail.setdefault(str(r["Email"]), r["action"])
            if r["action"] == "failed":
                drop[pos] = True
                counts["customer_failed"] += 1
                errors.append(str(r["error"]))
                quarantine.append(
                    QuarantineRecord(
                        source_key=key,
                        stage="customer",
                        rule=str(r["error_code"] or "customer_failed"),
                        column=wanted["Email"],
                        value=r["Email"],
                        message=f"{r['error']} (the order is not booked on the default debtor)",
                        payload={},
                    )
                )
            else:
                fine.append(key)
                if r.get("account_id"):
                    accounts[int(pos)] = str(r["account_id"])
        for action in seen_mail.values():
            customer_counts[action] = customer_counts.get(action, 0) + 1
        customer_counts["failed"] += len({str(q.value).casefold() for q in quarantine})
        store.quarantine(self.flow, quarantine, run_id=run_id)
        store.resolve_quarantine(self.flow, stage="customer", keys=fine, run_id=run_id)
        return drop, accounts
