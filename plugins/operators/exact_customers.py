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

__all__ = ["DEFAULT_CUSTOMER_COLUMNS", "EnsureExactCustomersOperator"]

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
