"""Generic sync operators: extract -> check -> map -> check -> plan -> upsert -> verify -> report.

Each operator is thin: keyword-only arguments, `template_fields`, cheap checks in `__init__` (no
I/O, no connection or Variable reads), and an `execute` that builds the adapter by name from the
registry, turns Airflow's context into a `StepContext` and calls one function of
`erpsync.operators._steps`. Rows travel as staged Parquet chunks; XCom carries only manifests.

Behaviour knobs come from the DAG's params when not given (`full_refresh`, `dry_run`,
`quarantine_threshold`, `batch_size`, `chunk_rows`, see `erpsync.flows.sync_params`): operator
argument > DAG param > code default.

Errors: configuration problems, refusals for good, verification differences and a failed quality
threshold fail the task without retries (AirflowFailException); transient errors (RetriableSourceError)
propagate so the task's retry budget handles them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from erpsync.errors import ConfigError, FatalSourceError

if TYPE_CHECKING:
    from erpsync.operators._steps import StepContext

__all__ = [
    "ExtractOperator",
    "MapOperator",
    "PlanOperator",
    "QualityCheckOperator",
    "ReportOperator",
    "UpsertOperator",
    "ValidateOperator",
    "VerifyOperator",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", "", "none"}


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _as_number(value: Any, name: str, kind: type = int) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a {kind.__name__}, got {value!r}") from None


def _as_keys(value: Any) -> list[str]:
    """The `retry_keys` param as a list of keys: a list, or one text of keys split by commas/lines."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = value.replace("\n", ",").split(",")
    if not isinstance(value, (list, tuple)) or any(isinstance(k, (dict, list, tuple)) for k in value):
        raise ConfigError(f"retry_keys must be a list of source keys, got {value!r}")
    return [str(k).strip() for k in value if k is not None and str(k).strip()]


class _SyncStepOperator(BaseOperator):
    """Common plumbing: the flow's mapping, the state store, the run's staging folder, error policy.

    :param flow: the flow (mapping file stem), usually the DAG id.
    :param mappings_dir: folder of the mapping files (default ERPSYNC_MAPPINGS_DIR, then include/mappings).
    :param state_url: state store URL (default ERPSYNC_STATE_URL, then SQLite under $AIRFLOW_HOME).
    """

    template_fields: Sequence[str] = ("flow", "mappings_dir", "state_url")
    ui_color = "#e8f1fb"

    def __init__(self, *, flow: str, mappings_dir: str | None = None, state_url: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(flow, str) or not flow.strip():
            raise ValueError(f"{self.task_id}: flow must be a non-empty string, got {flow!r}")
        self.flow = flow
        self.mappings_dir = mappings_dir
        self.state_url = state_url

    def _param(self, context, name: str, value: Any, default: Any) -> Any:
        if value is not None:
            return value
        params = context.get("params") or {}
        got = params.get(name, default)
        return default if got is None else got

    def _step_context(self, context) -> StepContext:
        from erpsync.operators._steps import StepContext
        from erpsync.staging import run_staging_dir
        from erpsync.state import StateStore

        ti = context["ti"]
        dag_id = ti.dag_id
        run_id = context["run_id"]
        store = StateStore(self.state_url) if self.state_url else StateStore()
        return StepContext(
            flow=self.flow,
            dag_id=dag_id,
            run_id=run_id,
            staging=run_staging_dir(dag_id, run_id),
            store=store,
            interval_start=context.get("data_interval_start"),
            interval_end=context.get("data_interval_end"),
            try_number=int(getattr(ti, "try_number", 1) or 1),
        )

    def _mapping(self):
        from airflow.sdk.exceptions import AirflowSkipException

        from erpsync.mapping import load_flow

        mapping = load_flow(self.flow, self.mappings_dir)
        if not mapping.enabled:
            # Disabling a flow is a line in its YAML, not a code change: every step skips.
            raise AirflowSkipException(f"flow {self.flow} is disabled (enabled: false in {mapping.path})")
        return mapping

    def execute(self, context) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from erpsync.quality import QualityThresholdError

        try:
            result = self.run_step(context)
        except (ConfigError, FatalSourceError, QualityThresholdError) as exc:
            # A retry cannot fix these: fail now, with the error's own words.
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        self._keep_outlets_only_if_written(result)
        return result

    def _keep_outlets_only_if_written(self, result: Any) -> None:
        """Drop this try's asset outlets when its manifest shows nothing created or updated.

        The task runner reads `task.outlets` after `execute` to record the asset events, so an
        unchanged run (or a dry run) of the products flow does not start the orders flow for nothing.
        Only results that carry write counts (upsert manifests) are judged; other steps keep theirs.
        """
        if not self.outlets or not isinstance(result, dict):
            return
        counts = (result.get("extra") or {}).get("counts")
        if not isinstance(counts, dict) or "created" not in counts:
            return
        written = int(counts.get("created") or 0) + int(counts.get("updated") or 0)
        if written == 0:
            self.log.info(
                "Nothing was written: no asset event for %s",
                ", ".join(str(getattr(o, "uri", o)) for o in self.outlets),
            )
            self.outlets = []

    def run_step(self, context) -> Any:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError


class _AdapterStepOperator(_SyncStepOperator):
    """A step that talks to one system through an adapter built inside `execute`.

    :param adapter: registry name ("salesforce", "exact_online", "quickbooks", "memory") or "module:Class".
    :param conn_id: the Airflow connection the adapter's hook uses.
    :param adapter_kwargs: extra keyword arguments for the adapter (templated).
    """

    template_fields: Sequence[str] = (*_SyncStepOperator.template_fields, "conn_id", "adapter_kwargs")

    def __init__(
        self, *, adapter: str, conn_id: str | None = None, adapter_kwargs: dict | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        if not isinstance(adapter, str) or not adapter:
            raise ValueError(f"{self.task_id}: adapter must be a registry name, got {adapter!r}")
        if adapter_kwargs is not None and not isinstance(adapter_kwargs, dict):
            raise ValueError(
                f"{self.task_id}: adapter_kwargs must be a dict, got {type(adapter_kwargs).__name__}"
            )
        self.adapter = adapter
        self.conn_id = conn_id
        self.adapter_kwargs = adapter_kwargs

    def _adapter(self):
        from erpsync.adapters import get_adapter

        return get_adapter(self.adapter, conn_id=self.conn_id, **(self.adapter_kwargs or {}))


class _InputMixin:
    """Adds the upstream manifest (`manifest=upstream.output`, resolved by Airflow at run time)."""

    @staticmethod
    def _check_manifest(task_id: str, manifest: Any) -> None:
        if manifest is None:
            raise ValueError(f"{task_id}: manifest is required (pass the upstream task's .output)")


class ValidateOperator(_SyncStepOperator):
    """Check, at the head of a flow, that every system answers and the mapping fits the target.

    The same checks as `erpsync validate` (connections; unknown target fields, lengths larger than
    the target allows, required target fields not mapped, fields the target will not write); a red
    result fails the task without retries and lists every problem.

    :param systems: system -> {"adapter": name, "conn_id": ..., "options": {...}}; a system not
        listed uses the adapter registered under its own name and its default connection id.
    """

    template_fields: Sequence[str] = (*_SyncStepOperator.template_fields, "systems")

    def __init__(self, *, systems: dict[str, dict] | None = None, **kwargs):
        super().__init__(**kwargs)
        for system, spec in (systems or {}).items():
            if not isinstance(spec, dict) or "adapter" not in spec:
                raise ValueError(f"{self.task_id}: systems[{system!r}] needs an 'adapter' name")
        self.systems = systems

    def run_step(self, context) -> dict:
        from erpsync.adapters import get_adapter
        from erpsync.adapters.validate import DEFAULT_CONN_IDS, validate_flow
        from erpsync.operators._steps import adapters_call_summary

        configured = self.systems or {}
        built = []

        def adapter_for(system: str):
            spec = configured.get(system, {"adapter": system, "conn_id": DEFAULT_CONN_IDS.get(system)})
            built.append(
                get_adapter(spec["adapter"], conn_id=spec.get("conn_id"), **(spec.get("options") or {}))
            )
            return built[-1]

        result = validate_flow(self._mapping(), adapter_for, {})
        for line in result.warnings:
            self.log.warning("%s", line)
        if result.status == "red":
            raise ConfigError(
                f"flow {self.flow} is not ready ({len(result.problems)} problem(s)):\n"
                + "\n".join(f"  {p}" for p in result.problems),
                where=result.path,
            )
        self.log.info("Flow %s is %s: %s", self.flow, result.status, "; ".join(result.passed))
        # The run report counts the calls validating made (describes, an Autotask UDF created).
        return {"status": result.status, "warnings": result.warnings, "calls": adapters_call_summary(built)}


class ExtractOperator(_AdapterStepOperator):
    """Stream the interval's changed source rows (plus quarantined keys, retried) into staging.

    :param full_refresh: ignore the data interval and read everything (default: DAG param).
    :param chunk_rows: rows per staged chunk (default: DAG param `chunk_rows`, else 50,000).
    """

    template_fields: Sequence[str] = (*_AdapterStepOperator.template_fields, "full_refresh", "chunk_rows")

    def __init__(
        self, *, full_refresh: bool | str | None = None, chunk_rows: int | str | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self.full_refresh = full_refresh
        self.chunk_rows = chunk_rows

    def run_step(self, context) -> dict:
        from erpsync.operators._steps import extract_step

        full = _as_bool(self._param(context, "full_refresh", self.full_refresh, False), "full_refresh")
        chunk_rows = _as_number(self._param(context, "chunk_rows", self.chunk_rows, 50_000), "chunk_rows")
        manifest = extract_step(
            self._step_context(context),
            self._mapping(),
            self._adapter(),
            full_refresh=full,
            chunk_rows=chunk_rows,
            only_keys=_as_keys(self._param(context, "retry_keys", None, [])),
        )
        return manifest.to_xcom()


class QualityCheckOperator(_SyncStepOperator, _InputMixin):
    """Check the staged rows against the mapping's source or target rules; quarantine the bad ones.

    :param manifest: the upstream manifest (extract's for side="source", map's for side="target").
    :param side: "source" or "target".
    :param threshold: the largest failed share accepted (default: DAG param `quarantine_threshold`,
        then the mapping's `quality.threshold`, then 0.1).
    """

    template_fields: Sequence[str] = (*_SyncStepOperator.template_fields, "manifest", "threshold")

    def __init__(self, *, manifest: Any, side: str, threshold: float | str | None = None, **kwargs):
        super().__init__(**kwargs)
        if side not in ("source", "target"):
            raise ValueError(f"{self.task_id}: side must be 'source' or 'target', got {side!r}")
        self._check_manifest(self.task_id, manifest)
        self.manifest, self.side, self.threshold = manifest, side, threshold

    def run_step(self, context) -> dict:
        from erpsync.operators._steps import check_step

        threshold = self._param(context, "quarantine_threshold", self.threshold, None)
        if threshold is not None:
            threshold = _as_number(threshold, "threshold", float)
            if not 0 <= threshold <= 1:
                raise ConfigError(f"threshold must be between 0 and 1, got {threshold}")
        return check_step(
            self._step_context(context), self._mapping(), self.manifest, side=self.side, threshold=threshold
        ).to_xcom()


class MapOperator(_SyncStepOperator, _InputMixin):
    """Apply the flow's compiled mapping to every staged chunk.

    :param manifest: the upstream (source check) manifest.
    :param lookup_adapters: system -> {"adapter": name, "conn_id": ..., "options": {...}} for the
        systems the mapping's lookups read; a system not listed uses the adapter of the same name.
    """

    template_fields: Sequence[str] = (*_SyncStepOperator.template_fields, "manifest", "lookup_adapters")

    def __init__(self, *, manifest: Any, lookup_adapters: dict[str, dict] | None = None, **kwargs):
        super().__init__(**kwargs)
        self._check_manifest(self.task_id, manifest)
        for system, spec in (lookup_adapters or {}).items():
            if not isinstance(spec, dict) or "adapter" not in spec:
                raise ValueError(f"{self.task_id}: lookup_adapters[{system!r}] needs an 'adapter' name")
        self.manifest, self.lookup_adapters = manifest, lookup_adapters

    def run_step(self, context) -> dict:
        from erpsync.adapters import get_adapter
        from erpsync.operators._steps import adapters_call_summary, load_lookups, map_step

        mapping = self._mapping()
        configured = self.lookup_adapters or {}
        adapters = {}
        for spec in mapping.lookups.values():
            if spec.system not in adapters:
                cfg = configured.get(spec.system, {"adapter": spec.system})
                adapters[spec.system] = get_adapter(
                    cfg["adapter"], conn_id=cfg.get("conn_id"), **(cfg.get("options") or {})
                )
        lookups = load_lookups(mapping, adapters)
        return map_step(
            self._step_context(context),
            mapping,
            self.manifest,
            lookups=lookups,
            calls=adapters_call_summary(adapters.values()),
        ).to_xcom()


class PlanOperator(_AdapterStepOperator, _InputMixin):
    """Plan create / update / skip / conflict / unplaceable against the target's current records.

    :param manifest: the upstream (target check) manifest.
    :param requires: target fields that must have a value to place a row (a contact's company).
    """

    template_fields: Sequence[str] = (*_AdapterStepOperator.template_fields, "manifest")

    def __init__(self, *, manifest: Any, requires: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self._check_manifest(self.task_id, manifest)
        self.manifest, self.requires = manifest, list(requires)

    def run_step(self, context) -> dict:
        from erpsync.operators._steps import plan_step

        return plan_step(
            self._step_context(context),
            self._mapping(),
            self.manifest,
            self._adapter(),
            requires=self.requires,
        ).to_xcom()


class UpsertOperator(_AdapterStepOperator, _InputMixin):
    """Write the plan's creates and updates; identities and hashes are recorded batch by batch.

    :param manifest: the plan manifest.
    :param batch_size: rows per write call (default: DAG param `batch_size`, else 200).
    :param dry_run: write nothing (default: DAG param `dry_run`).
    :param max_retries: resends of rows the target refused as transient, within this task try.
    :param retry_wait: seconds before the first resend; doubled each time, at most 30.
    """

    template_fields: Sequence[str] = (
        *_AdapterStepOperator.template_fields,
        "manifest",
        "batch_size",
        "dry_run",
    )

    def __init__(
        self,
        *,
        manifest: Any,
        batch_size: int | str | None = None,
        dry_run: bool | str | None = None,
        max_retries: int = 2,
        retry_wait: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._check_manifest(self.task_id, manifest)
        if isinstance(batch_size, int) and batch_size < 1:
            raise ValueError(f"{self.task_id}: batch_size must be at least 1, got {batch_size}")
        if max_retries < 0:
            raise ValueError(f"{self.task_id}: max_retries must not be negative, got {max_retries}")
        if retry_wait < 0:
            raise ValueError(f"{self.task_id}: retry_wait must not be negative, got {retry_wait}")
        self.manifest, self.batch_size, self.dry_run = manifest, batch_size, dry_run
        self.max_retries, self.retry_wait = max_retries, retry_wait

    def run_step(self, context) -> dict:
        from erpsync.operators._steps import IdleAdapter, plans_writes, upsert_step

        batch_size = _as_number(self._param(context, "batch_size", self.batch_size, 200), "batch_size")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        dry_run = _as_bool(self._param(context, "dry_run", self.dry_run, False), "dry_run")
        # Nothing planned to write (an unchanged run): no adapter, no hook, no connection to build.
        adapter = self._adapter() if plans_writes(self.manifest) else IdleAdapter(self.adapter)
        return upsert_step(
            self._step_context(context),
            self._mapping(),
            self.manifest,
            adapter,
            batch_size=batch_size,
            dry_run=dry_run,
            max_retries=self.max_retries,
            retry_wait=self.retry_wait,
        ).to_xcom()


class VerifyOperator(_AdapterStepOperator, _InputMixin):
    """Read back what upsert wrote and compare every written field; fail loudly on differences.

    :param manifest: the upsert manifest.
    :param sample: check at most this many written records (None: all of them).
    """

    template_fields: Sequence[str] = (*_AdapterStepOperator.template_fields, "manifest", "sample")

    def __init__(self, *, manifest: Any, sample: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self._check_manifest(self.task_id, manifest)
        if sample is not None and (not isinstance(sample, int) or sample < 1):
            raise ValueError(f"{self.task_id}: sample must be a positive integer or None, got {sample!r}")
        self.manifest, self.sample = manifest, sample

    def run_step(self, context) -> dict:
        from erpsync.operators._steps import IdleAdapter, verify_step, wrote_rows

        # Nothing was written: nothing to read back, so no adapter to build either.
        adapter = self._adapter() if wrote_rows(self.manifest) else IdleAdapter(self.adapter)
        return verify_step(
            self._step_context(context), self._mapping(), self.manifest, adapter, sample=self.sample
        )


class ReportOperator(_SyncStepOperator):
    """Write the run report (task log, report.md and report.html in staging, run history).

    Runs whatever happened upstream (trigger rule all_done) and then fails if a step did not
    finish, so the DAG run's state stays honest.

    :param steps: step name -> task id whose XCom holds that step's manifest, in pipeline order.
    """

    template_fields: Sequence[str] = (*_SyncStepOperator.template_fields,)

    def __init__(self, *, steps: dict[str, str], **kwargs):
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        if not steps or not all(isinstance(v, str) for v in steps.values()):
            raise ValueError(f"{self.task_id}: steps must map step names to task ids, got {steps!r}")
        self.steps = dict(steps)

    def run_step(self, context) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from erpsync.operators._steps import report_step

        ti = context["ti"]
        manifests = {name: ti.xcom_pull(task_ids=task_id) for name, task_id in self.steps.items()}
        dry_run = _as_bool(self._param(context, "dry_run", None, False), "dry_run")
        summary = report_step(self._step_context(context), self._mapping(), manifests, dry_run=dry_run)
        self.log.info(
            "Run report (%s):\n%s", summary["files"]["markdown"], _read(summary["files"]["markdown"])
        )
        if summary["status"] == "failed":
            raise AirflowFailException("; ".join(summary["problems"]))
        return {
            k: summary[k]
            for k in (
                "status",
                "counts",
                "resolved",
                "new_quarantine",
                "quarantine",
                "files",
                "api_calls",
                "api_usage",
            )
        }


def _read(path: str) -> str:
    from erpsync.staging import staging_path  # the report may be in object storage

    return staging_path(path).read_text(encoding="utf-8")
