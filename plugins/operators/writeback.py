"""`WriteBackOperator`: write the target's ids back onto the source records (QuickBooks ListID ->
Salesforce `Account.QB_ListID__c`), so the link is visible where users work and survives a lost
state store.

Idempotent by comparison: the current value is read first and only records whose value differs are
written, so a rerun writes nothing and a write-back that failed last time is simply done again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from erpsync.errors import ConfigError
from erpsync.operators.sync import _AdapterStepOperator, _as_bool, _as_number, _InputMixin

__all__ = ["WriteBackOperator"]

_SALESFORCE_MAX = 200  # records per collections call


class WriteBackOperator(_AdapterStepOperator, _InputMixin):
    """Copy `target_id` from an upsert's results into `field` of the source records.

    :param manifest: the upsert manifest (its `extra.writeback` dataset when present, else its own
        results), with columns `_source_key` (the source record's id) and `target_id`.
    :param object_name: the source object to update (e.g. "Account").
    :param field: the field receiving the target id (e.g. "QB_ListID__c").
    :param key_field: the source object's id field, matched against `_source_key`.
    :param batch_size: records read and written per call (default: DAG param `batch_size`, else
        200, the most a Salesforce collections call takes; larger values are capped there).
    """

    template_fields: Sequence[str] = (
        *_AdapterStepOperator.template_fields,
        "manifest",
        "object_name",
        "field",
        "batch_size",
    )

    def __init__(
        self,
        *,
        manifest: Any,
        object_name: str,
        field: str,
        key_field: str = "Id",
        batch_size: int | str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._check_manifest(self.task_id, manifest)
        if not object_name or not field:
            raise ValueError(f"{self.task_id}: object_name and field are required")
        self.manifest, self.object_name, self.field, self.key_field = manifest, object_name, field, key_field
        self.batch_size = batch_size

    def _links(self):
        """Return the (source key, target id) pairs the upsert produced, one per source record."""
        import pandas as pd

        from erpsync.chunks import Manifest, read_chunks

        upsert = Manifest.from_xcom(self.manifest, where=f"{self.task_id}.manifest")
        staged = Manifest.from_xcom(upsert.extra["writeback"]) if "writeback" in upsert.extra else upsert
        frames = [df[["_source_key", "target_id"]] for df in read_chunks(staged, columns=None)]
        links = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=["_source_key", "target_id"])
        )
        links = links.dropna(subset=["target_id"])
        links = links[links["target_id"].astype(str).str.len() > 0]
        return links.drop_duplicates("_source_key", keep="last").astype(
            {"_source_key": str, "target_id": str}
        )

    def run_step(self, context) -> dict:
        import pandas as pd

        from erpsync.errors import RecordError

        if _as_bool(self._param(context, "dry_run", None, False), "dry_run"):
            self.log.info("Dry run: no write-back")
            return {"written": 0, "unchanged": 0, "failed": 0, "dry_run": True}
        size = _as_number(self._param(context, "batch_size", self.batch_size, _SALESFORCE_MAX), "batch_size")
        if size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {size}")
        size = min(size, _SALESFORCE_MAX)
        links = self._links()
        adapter = self._adapter()
        written = unchanged = 0
        errors: list[str] = []
        for start in range(0, len(links), size):
            batch = links.iloc[start : start + size]
            keys = batch["_source_key"].tolist()
            current = adapter.read_by_keys(self.object_name, self.key_field, keys, columns=[self.field])
            now = dict(zip(current[self.key_field].astype(str), current[self.field], strict=False))
            todo = batch[[str(now.get(k) or "") != t for k, t in zip(keys, batch["target_id"], strict=True)]]
            unchanged += len(batch) - len(todo)
            if todo.empty:
                continue
            rows = pd.DataFrame(
                {
                    "_source_key": todo["_source_key"],
                    self.key_field: todo["_source_key"],
                    self.field: todo["target_id"],
                }
            )
            results = adapter.upsert(self.object_name, rows, identity=self.key_field)
            failed = results[results["error"].notna() & (results["error"].astype(str) != "")]
            written += len(results) - len(failed)
            errors.extend(f"{r._source_key}: {r.error}" for r in failed.itertuples())
        summary = {
            "written": written,
            "unchanged": unchanged,
            "failed": len(errors),
            "errors": errors[:20],
            "calls": adapter.call_log.summary(),
        }
        self.log.info(
            "Wrote %s back to %d %s record(s); %d already held it; %d failed",
            self.field,
            written,
            self.object_name,
            unchanged,
            len(errors),
        )
        if errors:
            raise RecordError(
                f"{len(errors)} {self.object_name} record(s) refused {self.field}: " + "; ".join(errors[:5]),
                where=self.task_id,
                details={"records": len(errors)},
            )
        return summary
