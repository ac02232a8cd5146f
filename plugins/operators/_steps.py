"""The work of each sync step, as plain functions over a `StepContext` (no Airflow in here).

The operators in `erpsync.operators.sync` only turn Airflow's context into a `StepContext`, build
the adapter and call one of these. Keeping the steps free of Airflow makes them testable alone and
keeps each operator a few lines.

Retry safety, step by step:
- extract, check, map and plan write their output chunks afresh under fixed names (ChunkWriter
  replaces an earlier try's files) and only upsert into the state store;
- upsert records identity and content hash after every successful batch, skips rows whose hash
  is already recorded, and on a retried try first asks the target which rows an interrupted batch
  already wrote, so no write is repeated;
- report and verify only read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erpsync.chunks import ChunkWriter, Manifest, read_chunks
from erpsync.errors import ConfigError, FatalSourceError

if TYPE_CHECKING:
    import pandas as pd

    from erpsync.adapters.base import SystemAdapter
    from erpsync.mapping import Mapping
    from erpsync.state import StateStore

__all__ = [
    "StepContext",
    "VerificationError",
    "adapters_call_summary",
    "check_step",
    "extract_step",
    "map_step",
    "merge_api_usage",
    "plan_step",
    "report_step",
    "upsert_step",
    "verify_step",
]

log = logging.getLogger(__name__)

_KEY_BATCH = 500  # keys per read_by_keys call (SOQL IN lists and OData filters stay short)
DEFAULT_THRESHOLD = 0.1
_RETRY_WAIT_MAX = 30.0


class VerificationError(FatalSourceError):
    """The target does not hold what was written; the message lists the differences."""


@dataclass
class StepContext:
    """What every step needs to know about the run it belongs to."""

    flow: str
    dag_id: str
    run_id: str
    staging: Path
    store: StateStore
    interval_start: datetime | None = None
    interval_end: datetime | None = None
    try_number: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class IdleAdapter:
    """Stands in for a step's adapter when the step has nothing to send (an unchanged run's upsert
    and verify): building the real one costs imports, a hook and often a login, for no call."""

    def __init__(self, name: str) -> None:
        from erpsync.adapters.base import CallLog

        self.name = name
        self.call_log = CallLog()

    def __getattr__(self, attr: str) -> Any:
        raise ConfigError(f"{self.name}: the step planned no call, yet asked the adapter for {attr!r}")


def _manifest_or_none(manifest: Any) -> Manifest | None:
    try:
        return Manifest.from_xcom(manifest)
    except Exception:  # not a manifest: the step itself will say so
        return None


def plans_writes(manifest: Manifest | dict) -> bool:
    """Whether a plan manifest has creates or updates (True when it does not say: build the adapter)."""
    m = _manifest_or_none(manifest)
    counts = m.extra.get("counts") if m is not None else None
    if not isinstance(counts, dict) or not {"create", "update"} <= set(counts):
        return True
    return int(counts["create"] or 0) + int(counts["update"] or 0) > 0


def wrote_rows(manifest: Manifest | dict) -> bool:
    """Whether an upsert manifest holds written rows (True when it does not say)."""
    m = _manifest_or_none(manifest)
    if m is None:
        return True
    return not m.extra.get("dry_run") and m.rows > 0


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    """Return a JSON-safe copy of a row for the quarantine payload."""
    from erpsync.plan import normalize

    out = {}
    for k, v in row.items():
        try:
            out[str(k)] = normalize(v)
        except (TypeError, ValueError):
            out[str(k)] = str(v)
    return out


def _records(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    if "_source_key" in df.columns:
        keys = df["_source_key"].astype(str).tolist()
    else:
        keys = [str(i) for i in df.index]
    return dict(zip(keys, df.to_dict("records"), strict=True))


# ---- extract ------------------------------------------------------------------------------------


def _window(ctx: StepContext, mapping: Mapping, full_refresh: bool):
    from erpsync.adapters import ReadWindow

    if full_refresh:
        return None
    start, end = ctx.interval_start, ctx.interval_end
    if start is None or end is None or start >= end:
        # A manual run has no interval of its own: continue from the flow's cursor up to now.
        cursor = ctx.store.get_cursor(ctx.flow, mapping.source.object)
        start = _as_instant(cursor)
        end = end or datetime.now(UTC)
    return ReadWindow(start, end)


def _as_instant(cursor: str | None) -> datetime | None:
    """A stored cursor as a time; None when there is none or it is a sync token (a row version)."""
    try:
        return datetime.fromisoformat(cursor) if cursor else None
    except ValueError:
        return None


def _source_feed(ctx: StepContext, mapping: Mapping, adapter, window, full_refresh, columns, chunk_rows):
    """The source rows of this run: those changed in `window`; or, when the mapping's cursor is a row
    version the adapter has a sync feed for (Exact's `Timestamp`, `read_since`), every change after
    the stored cursor, deletions included (reported, never propagated). A backfill replays its own
    interval through the `Modified` window instead, and leaves the sync cursor alone."""
    src = mapping.source
    if _reads_sync(ctx, mapping, adapter) and not ctx.run_id.startswith("backfill__"):
        token = ctx.store.get_cursor(ctx.flow, src.object)
        return adapter.read_since(
            src.object, token, columns=columns, chunk_rows=chunk_rows, restart=full_refresh
        )
    return adapter.read(src.object, window=window, columns=columns, chunk_rows=chunk_rows)


def _reads_sync(ctx: StepContext, mapping: Mapping, adapter) -> bool:
    """True when the mapping's cursor is a row version (`Timestamp`) the adapter reads a sync feed by."""
    return mapping.source.cursor == "Timestamp" and hasattr(adapter, "read_since")


def extract_step(
    ctx: StepContext,
    mapping: Mapping,
    adapter: SystemAdapter,
    *,
    full_refresh: bool = False,
    chunk_rows: int = 50_000,
    only_keys: Iterable[Any] | None = None,
) -> Manifest:
    """Read the interval's changed rows plus the quarantined keys' current rows into staging.

    With `only_keys` (the `retry_keys` param: records a user chose to retry) only those keys' current
    rows are read, and the cursor stays where it is: the rows changed in between are still ahead.
    """
    import pandas as pd

    src = mapping.source
    ctx.store.start_run(
        flow=ctx.flow, run_id=ctx.run_id, interval_start=ctx.interval_start, interval_end=ctx.interval_end
    )
    columns = list(dict.fromkeys([src.key, *([src.cursor] if src.cursor else []), *src.fields]))
    window = _window(ctx, mapping, full_refresh)
    writer = ChunkWriter(ctx.staging, "extract")
    seen: set[str] = set()
    max_cursor: str | None = None
    in_window = 0
    feed = None  # what the source was read through (a sync feed knows its cursor and deletions)

    keyless = 0

    def take(df: pd.DataFrame) -> pd.DataFrame:
        nonlocal max_cursor, keyless
        # A row without its key can be neither matched, nor quarantined, nor retried: count it,
        # say so in the log and the report, and carry on with the others.
        blank = df[src.key].isna() | df[src.key].astype(str).str.strip().eq("")
        if blank.any():
            keyless += int(blank.sum())
            log.warning(
                "%d %s row(s) without %s left out (source positions %s)",
                int(blank.sum()),
                src.object,
                src.key,
                [int(i) for i in blank[blank].index[:5]],
            )
            df = df[~blank.to_numpy()]
        keys = df[src.key].astype(str)
        fresh = ~keys.isin(seen) & ~keys.duplicated()
        df = df[fresh.to_numpy()]
        seen.update(keys[fresh].tolist())
        if src.cursor and src.cursor in df.columns and len(df):
            top = pd.to_datetime(df[src.cursor], utc=True, errors="coerce").max()
            if pd.notna(top):
                # Microseconds, floored: a later window starting here (inclusive) misses nothing.
                iso = top.floor("us").to_pydatetime().isoformat()
                max_cursor = iso if max_cursor is None or iso > max_cursor else max_cursor
        return df

    chosen = list(dict.fromkeys(str(k).strip() for k in only_keys or () if str(k).strip()))
    if chosen:
        window = None
        retry_keys = chosen
    else:
        for chunk in (feed := _source_feed(ctx, mapping, adapter, window, full_refresh, columns, chunk_rows)):
            chunk = take(chunk)
            in_window += len(chunk)
            writer.write(chunk)
        retry_keys = [k for k in ctx.store.open_quarantine_keys(ctx.flow) if k not in seen]
    retried = 0
    for i in range(0, len(retry_keys), _KEY_BATCH):
        again = take(
            adapter.read_by_keys(src.object, src.key, retry_keys[i : i + _KEY_BATCH], columns=columns)
        )
        retried += len(again)
        writer.write(again[columns])
    sync = feed if hasattr(feed, "deleted") else None
    if sync is not None:  # a sync feed's cursor is its row version, never a time from the rows
        max_cursor = sync.cursor
    elif _reads_sync(ctx, mapping, adapter):  # a backfill's window never moves the sync cursor
        max_cursor = None
    manifest = writer.close(
        **(
            {"deleted_in_source": len(sync.deleted), "deleted_keys": sync.deleted[:100]}
            if sync is not None
            else {}
        ),
        columns=columns,
        window=[_iso(window.start), _iso(window.end)] if window else None,
        full_refresh=bool(full_refresh),
        in_window=in_window,
        retried=retried,
        quarantined_not_found=len(retry_keys) - retried,
        rows_without_key=keyless,
        # A run limited to chosen keys never moves the cursor (its rows are not "everything up to").
        max_cursor=None if chosen else max_cursor,
        only_keys=len(chosen),
        calls=adapter.call_log.summary(),
    )
    log.info(
        "Extracted %d %s rows (%d changed in the window, %d retried from quarantine)",
        manifest.rows,
        src.object,
        in_window,
        retried,
    )
    return manifest


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


# ---- quality check ------------------------------------------------------------------------------


def check_step(
    ctx: StepContext,
    mapping: Mapping,
    manifest: Manifest | dict,
    *,
    side: str,
    threshold: float | None = None,
) -> Manifest:
    """Run the mapping's source or target rules: bad rows to quarantine, good rows on.

    Fails (QualityThresholdError) only when the failed share of all rows passes the threshold,
    after the bad rows are quarantined, so the quarantine shows what went wrong.
    """
    import pandas as pd

    from erpsync.quality import QualityResult, enforce_threshold, run_checks
    from erpsync.state import QuarantineRecord

    if side not in ("source", "target"):
        raise ConfigError(f"side must be 'source' or 'target', got {side!r}")
    manifest = Manifest.from_xcom(manifest, where=f"check_{side} input")
    rules = list(getattr(mapping.quality, side))
    key_column = mapping.source.key if side == "source" else "_source_key"
    stage = f"check_{side}"
    limit = threshold if threshold is not None else mapping.quality.threshold
    limit = DEFAULT_THRESHOLD if limit is None else float(limit)
    writer = ChunkWriter(ctx.staging, stage)
    # Rows retried from quarantine that still fail are already known: they stay quarantined but do
    # not count toward the threshold, or one stuck row would fail every quiet run.
    known_bad = set(ctx.store.open_quarantine_keys(ctx.flow))
    total, bad_total, fresh_total, fresh_bad, failed_by_rule = 0, 0, 0, 0, {}
    for i, chunk in enumerate(read_chunks(manifest)):
        result = run_checks(chunk, rules, key_column=key_column, suite_name=f"{ctx.flow}.{side}")
        total += result.total
        bad_total += result.bad_count
        retried = chunk[key_column].astype(str).isin(known_bad)
        bad_retried = result.bad_rows[key_column].astype(str).isin(known_bad)
        fresh_total += int((~retried).sum())
        fresh_bad += int((~bad_retried).sum())
        fresh_keys = set(result.bad_rows.loc[~bad_retried.to_numpy(), key_column].astype(str))
        for b in result.bad.to_dict("records"):
            if str(b["_source_key"]) in fresh_keys:
                failed_by_rule[b["rule"]] = failed_by_rule.get(b["rule"], 0) + 1
        rows = dict(
            zip(result.bad_rows[key_column].astype(str), result.bad_rows.to_dict("records"), strict=True)
        )
        ctx.store.quarantine(
            ctx.flow,
            (
                QuarantineRecord(
                    source_key=str(b["_source_key"]),
                    stage=stage,
                    rule=str(b["rule"]),
                    column=str(b["column"]),
                    value=b["value"],
                    message=f"failed {b['rule']} in suite {ctx.flow}.{side} (chunk {i})",
                    payload=_payload(rows.get(str(b["_source_key"]), {})),
                )
                for b in result.bad.to_dict("records")
            ),
            run_id=ctx.run_id,
        )
        ctx.store.resolve_quarantine(
            ctx.flow, stage=stage, keys=result.good[key_column].astype(str).tolist(), run_id=ctx.run_id
        )
        writer.write(result.good)
    out = writer.close(
        columns=manifest.columns,
        checked=total,
        quarantined=bad_total,
        still_bad_from_quarantine=bad_total - fresh_bad,
        failed_by_rule=failed_by_rule,
    )
    log.info(
        "Quality %s: %d of %d rows failed (%d of them already in quarantine) %s",
        side,
        bad_total,
        total,
        bad_total - fresh_bad,
        failed_by_rule or "",
    )
    overall = QualityResult(
        good=pd.DataFrame(),
        bad=pd.DataFrame(),
        bad_rows=pd.DataFrame(index=range(fresh_bad)),
        failed_by_rule=failed_by_rule,
        total=fresh_total,
        suite_name=f"{ctx.flow}.{side}",
        rules=rules,
    )
    enforce_threshold(overall, limit)
    return out


# ---- map ----------------------------------------------------------------------------------------


def adapters_call_summary(adapters: Iterable[SystemAdapter]) -> dict[str, Any]:
    """One call summary for a step that used several adapters (validate, map's lookups).

    An adapter whose summary carries its system's real HTTP calls (``api``, the Autotask adapter's)
    keeps them, as a list, so the run report can count them.
    """
    from erpsync.report import merge_calls

    summaries = [a.call_log.summary() for a in adapters]
    out = merge_calls({str(i): s for i, s in enumerate(summaries)})
    out.pop("by_task", None)
    apis = [s["api"] for s in summaries if isinstance(s.get("api"), dict)]
    if apis:
        out["api"] = apis
    return out


def merge_api_usage(summaries: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Sum the real HTTP calls the steps' adapters reported (``calls["api"]``), per system.

    Returns system -> calls, by task, by kind, waits, 429s, and the budget figures: the tenant's
    threshold, this run's share of it (``share_of_hour``), the package's share and cap, and the
    newest threshold reading any task used.
    """
    out: dict[str, dict[str, Any]] = {}
    for task, summary in summaries.items():
        api = summary.get("api") if isinstance(summary, dict) else None
        for part in api if isinstance(api, list) else [api]:
            if not isinstance(part, dict):
                continue
            agg = out.setdefault(
                str(part.get("system") or "api"),
                {"calls": 0, "by_task": {}, "by_kind": {}, "waited_seconds": 0.0, "rate_limited": 0},
            )
            n = int(part.get("calls") or 0)
            agg["calls"] += n
            agg["by_task"][task] = agg["by_task"].get(task, 0) + n
            for kind, k in (part.get("by_kind") or {}).items():
                agg["by_kind"][kind] = agg["by_kind"].get(kind, 0) + int(k)
            agg["waited_seconds"] = round(agg["waited_seconds"] + float(part.get("waited_seconds") or 0), 3)
            agg["rate_limited"] += int(part.get("rate_limited") or 0)
            for key in ("budget_share", "own_cap", "threshold", "daily_limit", "minutely_limit"):
                if part.get(key) is not None:
                    agg[key] = part[key]
            if part.get("daily_used") is not None:  # Exact: the shared day's count after the step
                agg["daily_used"] = max(int(part["daily_used"]), int(agg.get("daily_used") or 0))
            reading = part.get("reading")
            if isinstance(reading, dict) and str(reading.get("read_at")) > str(
                (agg.get("reading") or {}).get("read_at", "")
            ):
                agg["reading"] = reading
    for agg in out.values():
        if agg.get("threshold"):
            agg["share_of_hour"] = round(agg["calls"] / agg["threshold"], 6)
    return out


def load_lookups(mapping: Mapping, adapters: dict[str, SystemAdapter]) -> dict[str, pd.DataFrame]:
    """Read each declared lookup table whole (they are small: sales reps, VAT codes, debtors)."""
    import pandas as pd

    tables = {}
    for name, spec in mapping.lookups.items():
        adapter = adapters.get(spec.system)
        if adapter is None:
            raise ConfigError(
                f"lookup {name!r} reads {spec.system} {spec.object}, but no adapter for {spec.system!r} was given",
                where=str(mapping.path),
            )
        columns = list(dict.fromkeys([*spec.columns, *spec.filter]))
        frames = list(adapter.read(spec.object, window=None, columns=columns))
        tables[name] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return tables


def map_step(
    ctx: StepContext,
    mapping: Mapping,
    manifest: Manifest | dict,
    *,
    lookups: dict[str, pd.DataFrame] | None = None,
    calls: dict[str, Any] | None = None,
) -> Manifest:
    """Apply the compiled mapping chunk by chunk; rejected rows go to quarantine (stage `map`).

    :param calls: the call summary of the lookups' adapters (`adapters_call_summary`), for the report.
    """
    from erpsync.state import QuarantineRecord

    manifest = Manifest.from_xcom(manifest, where="map input")
    compiled = mapping.compile()
    writer = ChunkWriter(ctx.staging, "map")
    rejected_rows: set[str] = set()
    filtered = 0
    for chunk in read_chunks(manifest):
        mapped = compiled.apply(chunk, lookups)
        src_rows = dict(zip(chunk[mapping.source.key].astype(str), chunk.to_dict("records"), strict=True))
        ctx.store.quarantine(
            ctx.flow,
            (
                QuarantineRecord(
                    source_key=str(r["_source_key"]),
                    stage="map",
                    rule=str(r["rule"]),
                    column=str(r["field"]),
                    value=r["value"],
                    message=str(r["message"]),
                    payload=_payload(src_rows.get(str(r["_source_key"]), {})),
                )
                for r in mapped.rejected.to_dict("records")
            ),
            run_id=ctx.run_id,
        )
        rejected_rows.update(mapped.rejected["_source_key"].astype(str))
        filtered += len(mapped.skipped)
        ctx.store.resolve_quarantine(
            ctx.flow,
            stage="map",
            keys=[*mapped.frame["_source_key"].astype(str), *mapped.skipped["_source_key"].astype(str)],
            run_id=ctx.run_id,
        )
        writer.write(mapped.frame)
    out = writer.close(
        columns=["_source_key", *mapping.fields],
        quarantined=len(rejected_rows),
        filtered=filtered,
        **({"calls": calls} if calls else {}),
    )
    log.info(
        "Mapped %d rows; %d rejected, %d left out by the source filter",
        out.rows,
        len(rejected_rows),
        filtered,
    )
    return out


# ---- plan ---------------------------------------------------------------------------------------


def plan_step(
    ctx: StepContext,
    mapping: Mapping,
    manifest: Manifest | dict,
    adapter: SystemAdapter,
    *,
    requires: Iterable[str] = (),
) -> Manifest:
    """Decide create/update/skip/conflict/unplaceable per row; conflicts and unplaceable rows are
    quarantined (stage `plan`) with their reason, so they are reported and retried, never dropped."""
    from erpsync.plan import Planner, PlanSpec
    from erpsync.state import QuarantineRecord

    manifest = Manifest.from_xcom(manifest, where="plan input")
    spec = PlanSpec.from_mapping(mapping, requires=requires)
    planner = Planner(
        spec,
        adapter,
        lambda keys: ctx.store.get_identities(ctx.flow, keys),
        unmapping=ctx.store.unmapping(ctx.flow, run_id=ctx.run_id),
    )
    writer = ChunkWriter(ctx.staging, "plan")
    for chunk in read_chunks(manifest):
        plan = planner.plan(chunk)
        stuck = plan[plan["_action"].isin(["conflict", "unplaceable"])]
        ctx.store.quarantine(
            ctx.flow,
            (
                QuarantineRecord(
                    source_key=str(r["_source_key"]),
                    stage="plan",
                    rule=str(r["_action"]),
                    column="",
                    value=None,
                    message=str(r["_reason"]),
                    payload=_payload({k: v for k, v in r.items() if not str(k).startswith("_")}),
                )
                for r in stuck.to_dict("records")
            ),
            run_id=ctx.run_id,
        )
        placed = plan.loc[~plan["_action"].isin(["conflict", "unplaceable"]), "_source_key"]
        ctx.store.resolve_quarantine(ctx.flow, stage="plan", keys=placed.tolist(), run_id=ctx.run_id)
        writer.write(plan)
    out = writer.close(counts=dict(planner.counts), calls=adapter.call_log.summary())
    log.info("Plan for %s: %s", spec.target_object, planner.counts)
    return out


# ---- upsert -------------------------------------------------------------------------------------


def upsert_step(
    ctx: StepContext,
    mapping: Mapping,
    manifest: Manifest | dict,
    adapter: SystemAdapter,
    *,
    batch_size: int = 200,
    dry_run: bool = False,
    max_retries: int = 2,
    retry_wait: float = 1.0,
) -> Manifest:
    """Write the plan's creates and updates in batches, recording identities after each batch.

    Rows the target refuses as transient (a locked record) are resent up to `max_retries` times
    with exponential waits from `retry_wait` seconds; rows refused for good, or still refused after
    that, are quarantined with the target's error code and message.
    """
    from erpsync.plan import PlanSpec

    manifest = Manifest.from_xcom(manifest, where="upsert input")
    spec = PlanSpec.from_mapping(mapping)
    counts = dict.fromkeys(UPSERT_COUNTS, 0)
    writer = ChunkWriter(ctx.staging, "upsert")
    if dry_run:
        planned = manifest.extra.get("counts", {})
        return writer.close(dry_run=True, counts=counts, planned=planned, calls=adapter.call_log.summary())

    for plan in read_chunks(manifest):
        record_skips(ctx, plan, counts)
        todo = plan[plan["_action"].isin(["create", "update"])]
        if todo.empty:
            continue
        # Rows an earlier try of this task already wrote carry their planned hash in the state store.
        known = ctx.store.get_identities(ctx.flow, todo["_source_key"].tolist())
        done = [
            k in known and known[k].content_hash == h
            for k, h in zip(todo["_source_key"], todo["_hash"], strict=True)
        ]
        counts["already_written"] += sum(done)
        todo = todo[[not d for d in done]]
        if ctx.try_number > 1 and len(todo):
            todo = _reconcile(ctx, spec, adapter, todo, counts)
        source = _staged_source_rows(ctx, mapping, set(todo["_source_key"].astype(str)))
        for action in ("create", "update"):
            rows = todo[todo["_action"] == action]
            for start in range(0, len(rows), batch_size):
                batch = rows.iloc[start : start + batch_size]
                results = _write_batch(ctx, spec, adapter, batch, action, max_retries, retry_wait)
                record_results(ctx, spec, results)
                log_written(ctx, spec, results, source)
                for result, n in results["_result"].value_counts().items():
                    counts[result] += int(n)
                writer.write(results)
    out = writer.close(counts=counts, calls=adapter.call_log.summary())
    log.info("Upsert into %s: %s", spec.target_object, counts)
    return out


#: the counts an upsert manifest carries in `extra.counts`
UPSERT_COUNTS = ("created", "updated", "failed", "skipped", "already_written", "linked")


def record_skips(ctx: StepContext, plan: pd.DataFrame, counts: dict[str, int]) -> pd.DataFrame:
    """Book one plan chunk's skipped rows and return them.

    A skip the plan matched to an existing target record (`_record`) gets its identity recorded
    (`linked`); every skipped row leaves upsert quarantine (it needs no write any more).
    """
    from erpsync.state import Identity

    skip = plan[plan["_action"] == "skip"]
    counts["skipped"] += len(skip)
    adopt = skip[skip["_record"].astype(bool)]
    if len(adopt):
        ctx.store.record_identities(
            ctx.flow,
            [Identity(r["_source_key"], r["_target_id"], r["_hash"]) for r in adopt.to_dict("records")],
            run_id=ctx.run_id,
        )
        counts["linked"] += len(adopt)
    ctx.store.resolve_quarantine(
        ctx.flow, stage="upsert", keys=skip["_source_key"].tolist(), run_id=ctx.run_id
    )
    return skip


def record_results(ctx: StepContext, spec, results: pd.DataFrame) -> pd.DataFrame:
    """Book one written batch in the state store and return its successful rows.

    Written rows get their identity and content hash recorded (so a rerun skips them) and leave
    upsert quarantine; refused rows are quarantined with the target's code and message. `results`
    holds the plan's columns plus `_result`, `_target_id`, `_error` and `_error_code`.
    """
    from erpsync.state import Identity, QuarantineRecord

    ok = results[results["_result"].isin(["created", "updated"])]
    ctx.store.record_identities(
        ctx.flow,
        [Identity(r["_source_key"], r["_target_id"], r["_hash"]) for r in ok.to_dict("records")],
        run_id=ctx.run_id,
    )
    # A row the target left alone on purpose (an order already in Exact) needs no write any more;
    # its identity is not recorded, so a later run set to update still sees the change.
    settled = results[results["_result"].isin(["created", "updated", "skipped"])]
    ctx.store.resolve_quarantine(
        ctx.flow, stage="upsert", keys=settled["_source_key"].tolist(), run_id=ctx.run_id
    )
    bad = results[results["_result"] == "failed"]
    ctx.store.quarantine(
        ctx.flow,
        (
            QuarantineRecord(
                source_key=r["_source_key"],
                stage="upsert",
                rule=str(r["_error_code"] or "refused"),
                column="",
                value=None,
                message=str(r["_error"]),
                payload=_payload({k: r.get(k) for k in spec.payload_columns(r["_action"])}),
            )
            for r in bad.to_dict("records")
        ),
        run_id=ctx.run_id,
    )
    return ok


def log_written(ctx: StepContext, spec, results: pd.DataFrame, source: dict[str, dict[str, Any]]) -> int:
    """Add a written or refused batch to the record activity log (`erpsync.state.activity`):
    the mapping's source fields as the run's source check staged them, and the fields sent."""
    from erpsync.state.activity import Activity, activity_retention_days, log_activity

    if results.empty or activity_retention_days() == 0:
        return 0
    rows = [
        Activity(
            source_key=str(r["_source_key"]),
            action=str(r["_result"]),
            target_id=r.get("_target_id"),
            source_fields=source.get(str(r["_source_key"])),
            sent_fields=_payload({c: r.get(c) for c in spec.payload_columns(r["_action"])}),
            error=None if r["_result"] != "failed" else str(r.get("_error")),
        )
        for r in results.to_dict("records")
    ]
    return log_activity(ctx.store, ctx.flow, rows, run_id=ctx.run_id)


def _staged_source_rows(ctx: StepContext, mapping: Mapping, keys: set[str]) -> dict[str, dict[str, Any]]:
    """The mapping's source fields of `keys`, read back from this run's source-check chunks."""
    import pyarrow.parquet as pq

    from erpsync.staging import glob_fresh
    from erpsync.state.activity import activity_retention_days

    if not keys or activity_retention_days() == 0:
        return {}
    src = mapping.source
    wanted = list(dict.fromkeys([src.key, *src.fields]))
    out: dict[str, dict[str, Any]] = {}
    for path in glob_fresh(ctx.staging, "check_source-*.parquet"):
        try:
            with path.open("rb") as fh:
                table = pq.read_table(fh)
        except (OSError, ValueError) as exc:  # the log is a convenience: never fail a write for it
            log.warning("activity log: cannot read %s: %s", path, exc)
            continue
        names = [c for c in wanted if c in table.column_names]
        if src.key not in names:
            continue
        for row in table.select(names).to_pylist():
            key = str(row[src.key])
            if key in keys:
                out[key] = _payload(row)
    return out


def _write_batch(ctx, spec, adapter, batch, action: str, max_retries: int, retry_wait: float = 1.0):
    """Send one batch; retry only the rows the target called transient, within max_retries."""
    import pandas as pd

    columns = spec.payload_columns(action)
    pending = batch
    finished = []
    for attempt in range(max_retries + 1):
        payload = pending[["_source_key", *columns]].copy()
        if action == "update":
            payload.insert(1, "_target_id", pending["_target_id"].to_numpy())
        res = adapter.upsert(spec.target_object, payload, identity=spec.identity).reset_index(drop=True)
        if len(res) != len(pending):
            raise FatalSourceError(
                f"{adapter.name} answered {len(res)} results for {len(pending)} rows",
                where=spec.target_object,
            )
        merged = pending.reset_index(drop=True).copy()
        merged["_result"] = res["action"].to_numpy()
        merged["_target_id"] = (
            res["target_id"].where(res["target_id"].notna(), merged["_target_id"]).to_numpy()
        )
        merged["_error"] = res["error"].to_numpy()
        merged["_error_code"] = res["error_code"].to_numpy()
        transient = merged["_result"].eq("failed") & res["retriable"].fillna(False).astype(bool)
        if not transient.any() or attempt == max_retries:
            finished.append(merged)
            break
        finished.append(merged[~transient.to_numpy()])
        pending = pending.reset_index(drop=True)[transient.to_numpy()]
        wait = min(_RETRY_WAIT_MAX, retry_wait * 2**attempt)
        log.warning(
            "Retrying %d rows the target refused for now in %.1f s (attempt %d)",
            len(pending),
            wait,
            attempt + 1,
        )
        time.sleep(wait)
    return pd.concat(finished, ignore_index=True)


def _reconcile(ctx, spec, adapter, todo, counts):
    """On a retried try, skip rows an interrupted batch already wrote (target holds the values)."""
    from erpsync.plan import normalize
    from erpsync.state import Identity

    ids = todo[spec.identity].dropna().astype(str).unique().tolist()
    found: dict[str, dict] = {}
    for i in range(0, len(ids), _KEY_BATCH):
        frame = adapter.read_by_keys(
            spec.target_object, spec.identity, ids[i : i + _KEY_BATCH], columns=spec.payload_columns("create")
        )
        found.update({str(normalize(r[spec.identity])): r for r in frame.to_dict("records")})
    id_field = adapter.describe(spec.target_object).id_field
    written = []
    for r in todo.to_dict("records"):
        rec = found.get(str(normalize(r[spec.identity])))
        cols = spec.payload_columns(r["_action"])
        if rec is not None and all(normalize(r[c]) == normalize(rec.get(c)) for c in cols):
            written.append(Identity(r["_source_key"], rec[id_field], r["_hash"]))
    if written:
        ctx.store.record_identities(ctx.flow, written, run_id=ctx.run_id)
        counts["already_written"] += len(written)
        log.info(
            "Retry: %d rows were already written by the interrupted try; not sending them again", len(written)
        )
    done = {w.source_key for w in written}
    return todo[~todo["_source_key"].isin(done).to_numpy()]


# ---- verify -------------------------------------------------------------------------------------


def verify_step(
    ctx: StepContext,
    mapping: Mapping,
    manifest: Manifest | dict,
    adapter: SystemAdapter,
    *,
    sample: int | None = None,
    max_listed: int = 20,
) -> dict[str, Any]:
    """Read back what upsert wrote and compare every written field; raise with the differences.

    Works chunk by chunk (a sample keeps only the `sample` rows with the smallest content hashes,
    a stable spread over the keys), so memory stays bounded however much was written.
    """
    import heapq

    from erpsync.plan import PlanSpec, normalize

    manifest = Manifest.from_xcom(manifest, where="verify input")
    if manifest.extra.get("dry_run"):
        return {"checked": 0, "dry_run": True, "calls": adapter.call_log.summary()}
    if not manifest.rows:  # nothing written: nothing to read back (no describe call either)
        return {
            **dict.fromkeys(("checked", "missing", "differences", "found"), 0),
            "calls": adapter.call_log.summary(),
        }
    spec = PlanSpec.from_mapping(mapping)
    id_field = adapter.describe(spec.target_object).id_field
    tally = {"checked": 0, "missing": 0, "differences": 0}
    listed: list[str] = []

    def check(rows: list[dict[str, Any]]) -> None:
        ids = [str(r["_target_id"]) for r in rows]
        found: dict[str, dict] = {}
        step = max(_KEY_BATCH, int(getattr(adapter, "keys_per_read", _KEY_BATCH)))  # fewer QuickBooks jobs
        for i in range(0, len(ids), step):
            frame = adapter.read_by_keys(
                spec.target_object, id_field, ids[i : i + step], columns=spec.payload_columns("create")
            )
            found.update({str(r[id_field]): r for r in frame.to_dict("records")})
        for r in rows:
            tally["checked"] += 1
            rec = found.get(str(r["_target_id"]))
            label = f"{spec.target_object} {r['_target_id']} (source {r['_source_key']})"
            problems = []
            if rec is None:
                tally["missing"] += 1
                problems.append(f"{label}: not found in {adapter.name}")
            else:
                action = "create" if r["_result"] == "created" else "update"
                for column in spec.payload_columns(action):
                    want, got = normalize(r.get(column)), normalize(rec.get(column))
                    if want is None and action == "update":
                        continue  # an empty mapped value leaves the target's value alone on update
                    if want != got and str(want) != str(got):
                        problems.append(f"{label}: {column} is {got!r}, expected {want!r}")
            tally["differences"] += len(problems)
            listed.extend(problems[: max(0, max_listed - len(listed))])

    kept: list[tuple[str, int, dict[str, Any]]] = []
    n = 0
    for chunk in read_chunks(manifest):
        rows = chunk[chunk["_result"].isin(["created", "updated"])].to_dict("records")
        if sample is None:
            check(rows)
            continue
        for r in rows:
            n += 1
            item = (str(r["_hash"]), -n, r)
            if len(kept) < sample:
                heapq.heappush(kept, _Max(item))
            elif item[:2] < kept[0].item[:2]:
                heapq.heapreplace(kept, _Max(item))
    if sample is not None:
        check([m.item[2] for m in kept])
    summary = {**tally, "found": tally["checked"] - tally["missing"], "calls": adapter.call_log.summary()}
    if tally["differences"]:
        shown = "\n".join(f"  {d}" for d in listed)
        more = tally["differences"] - len(listed)
        raise VerificationError(
            f"{tally['differences']} difference(s) between what was written and what {adapter.name} holds "
            f"({tally['missing']} record(s) missing of {tally['checked']} checked):\n{shown}"
            + (f"\n  ... and {more} more" if more > 0 else ""),
            where=f"{ctx.flow} verify",
            details={k: v for k, v in summary.items() if k != "calls"},
        )
    log.info("Verified %d written records in %s: all fields equal", tally["checked"], spec.target_object)
    return summary


class _Max:
    """Heap entry ordered in reverse, so a min-heap keeps the `sample` smallest hashes."""

    __slots__ = ("item",)

    def __init__(self, item: tuple) -> None:
        self.item = item

    def __lt__(self, other: _Max) -> bool:
        return self.item[:2] > other.item[:2]


# ---- report -------------------------------------------------------------------------------------


def report_step(
    ctx: StepContext, mapping: Mapping, manifests: dict[str, Any], *, dry_run: bool = False
) -> dict[str, Any]:
    """Build the run report from the steps' manifests; write it, store it, move the cursor on success."""
    from erpsync.report import RunReport, merge_calls

    def extra(step: str) -> dict[str, Any]:
        value = manifests.get(step)
        if isinstance(value, dict) and "extra" in value:
            return value["extra"]
        return value if isinstance(value, dict) else {}

    steps = {name: ("done" if manifests.get(name) is not None else "did not finish") for name in manifests}
    problems = [f"step {name} did not finish (see its log)" for name, v in steps.items() if v != "done"]
    warnings = []
    if extra("extract").get("rows_without_key"):
        warnings.append(
            f"{extra('extract')['rows_without_key']} source row(s) had no {mapping.source.key} and were left out"
        )
    if extra("extract").get("quarantined_not_found"):
        warnings.append(
            f"{extra('extract')['quarantined_not_found']} quarantined key(s) no longer exist in the source"
        )
    if extra("extract").get("deleted_in_source"):
        gone = extra("extract")
        warnings.append(
            f"{gone['deleted_in_source']} {mapping.source.object} record(s) were deleted in the source "
            f"since the last run; not deleted in the target, check them: {', '.join(gone['deleted_keys'][:20])}"
        )
    plan_counts = extra("plan").get("counts", {})
    # Orders a flow's own step before map left alone (already in the target, not in the statuses).
    before = extra("before_map").get("orders") or {}
    skipped_before = int(before.get("skipped_existing", 0)) + int(before.get("filtered", 0))
    upsert_counts = extra("upsert").get("counts", {})
    quarantine = ctx.store.quarantine_by_rule(ctx.flow, run_id=ctx.run_id)
    entries = ctx.store.quarantine_entries(ctx.flow)
    quarantined_keys = {e["source_key"] for e in entries if e["last_run_id"] == ctx.run_id}
    # News: rows quarantined for the first time in this run (a row refused at upsert is one); a row
    # retried and refused again was reported by the run that first saw it.
    new_quarantine = len({e["source_key"] for e in entries if e["first_run_id"] == ctx.run_id})
    counts = {
        "extracted": int(manifests.get("extract", {}).get("rows", 0))
        if isinstance(manifests.get("extract"), dict)
        else 0,
        "created": int(upsert_counts.get("created", 0)),
        "updated": int(upsert_counts.get("updated", 0)),
        # Upsert's skipped holds the plan's skips plus the rows the target adapter left alone (an
        # order already in Exact); a dry run has only the plan's.
        "skipped": max(int(plan_counts.get("skip", 0)), int(upsert_counts.get("skipped", 0)))
        + int(upsert_counts.get("already_written", 0))
        + skipped_before,
        "failed": int(upsert_counts.get("failed", 0)),
        "quarantined": len(quarantined_keys),
        "conflicts": int(plan_counts.get("conflict", 0)),
        "unplaceable": int(plan_counts.get("unplaceable", 0)),
    }
    if "deleted_in_source" in extra("extract"):
        counts["deleted_in_source"] = int(extra("extract")["deleted_in_source"])
    if dry_run:
        counts["would_create"] = int(plan_counts.get("create", 0))
        counts["would_update"] = int(plan_counts.get("update", 0))
    status = "failed" if problems else ("dry_run" if dry_run else "success")
    # A run whose only news is errors is no plain success: it reports (and alerts) as "errors".
    if status == "success" and new_quarantine and not (counts["created"] or counts["updated"]):
        status = "errors"
    step_calls = {name: extra(name).get("calls") for name in manifests}
    if isinstance(manifests.get("verify"), dict) and "calls" in manifests["verify"]:
        step_calls["verify"] = manifests["verify"]["calls"]
    calls = merge_calls(step_calls)
    # Systems whose adapters count their real HTTP calls (Autotask: every call against the tenant's
    # hourly threshold, writes included) report those; the others the adapter operations logged.
    api_usage = merge_api_usage(step_calls)
    api_calls = sum(u["calls"] for u in api_usage.values()) if api_usage else calls.get("total", 0)
    window = extra("extract").get("window") or [_iso(ctx.interval_start), _iso(ctx.interval_end)]
    report = RunReport(
        flow=ctx.flow,
        run_id=ctx.run_id,
        status=status,
        counts=counts,
        interval=list(window),
        quarantine=quarantine,
        resolved=ctx.store.resolved_count(ctx.flow, ctx.run_id),
        calls=calls,
        steps=steps,
        problems=problems,
        warnings=warnings,
        new_quarantine=new_quarantine,
        api_usage=api_usage,
    )
    run = ctx.store.get_run(ctx.flow, ctx.run_id)
    if run is not None:
        report.duration_seconds = (datetime.now(UTC) - run["started_at"]).total_seconds()
    files = report.write(ctx.staging)
    summary = {**report.to_dict(), "files": files, "api_calls": api_calls, "api_usage": api_usage}
    ctx.store.finish_run(
        flow=ctx.flow,
        run_id=ctx.run_id,
        status=status,
        counts=counts,
        report={
            k: summary[k]
            for k in (
                "counts",
                "quarantine",
                "new_quarantine",
                "resolved",
                "steps",
                "problems",
                "warnings",
                "files",
            )
        }
        | {"api_calls": api_calls, "api_usage": api_usage},
    )
    cursor = extra("extract").get("max_cursor")
    if status in ("success", "errors") and cursor:  # quarantined rows are retried by key, not by cursor
        ctx.store.set_cursor(ctx.flow, mapping.source.object, cursor, run_id=ctx.run_id)
    return summary
