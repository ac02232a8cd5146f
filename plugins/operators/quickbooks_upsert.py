"""`QuickBooksUpsertOperator`: the upsert step for QuickBooks customers, waiting in the triggerer.

The generic `UpsertOperator` with the QuickBooks adapter blocks a worker slot for as long as the Web
Connector is away (minutes in production, hours when the bookkeeper's PC is off). This operator does
the same work in bridge jobs and defers on `QbwcJobTrigger` while each one waits:

1. `execute()` reads the plan manifest, counts the skips, leaves out rows whose planned hash the state
   store already holds (written by an earlier try), and runs the `UpsertProgram` of
   `erpsync.adapters.quickbooks` over the rest: (read EditSequences) -> Adds + Mods -> (re-read and
   resend stale Mods) -> DataExtAdd of the Salesforce Id on the new ListIDs. Each phase is ONE bridge job
   whose idempotency key is `dag_id/run_id/task_id[/map_index]/b<batch>/<phase>/<hash>`; when the job
   is not finished, the task defers.
2. `execute_complete()` (and any retry's `execute()`) resumes where the task stopped. Progress is
   saved in the run's staging folder (`_Progress`): the rows to write (fixed by the first
   execution), the results of every finished batch, and the answers of every finished job of the
   current batch. A finished batch is not rebuilt; the current
   batch's program replays its earlier phases from the saved answers, and enqueues its next job with
   the same key, so the bridge hands back the job it already holds (never a second post). A crash
   between enqueue and completion therefore re-attaches to the same job, and resuming after the k-th
   job costs one batch's replay, not k jobs (a 50,000-row plan is 25 batches and about 50 jobs).
3. When the program ends, identities, hashes and quarantine are recorded exactly as `upsert_step` does,
   and the manifest has the same shape (stage `upsert`, the plan columns plus `_result`, `_target_id`,
   `_error`, `_error_code`; `extra.counts`, `extra.calls`), so `VerifyOperator` and `ReportOperator`
   work unchanged.

ListID write-back: `extra.writeback` is the manifest of a staged dataset `writeback-*.parquet` in the
run's staging folder with columns `_source_key` (the Salesforce Id), `target_id` (the QuickBooks
ListID) and `action` (created, updated, skipped, already_written) for every row that has a ListID.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from erpsync.errors import ConfigError
from erpsync.operators.sync import _as_bool, _as_number, _InputMixin, _SyncStepOperator

__all__ = ["QuickBooksUpsertOperator"]

_TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
_MAX_ROWS_PER_JOB = 4000


class QuickBooksUpsertOperator(_SyncStepOperator, _InputMixin):
    """Write the plan's Customer creates and updates to QuickBooks through the bridge, deferred.

    :param manifest: the plan manifest (`plan.output`).
    :param qbwc_bridge_conn_id: the bridge connection (host, token, `company` extra).
    :param company: company name on the bridge; default the connection's `company` extra.
    :param dry_run: write nothing (default: DAG param `dry_run`).
    :param rows_per_job: rows per bridge job (the bridge packs a job's requests into exchanges);
        a bigger plan runs as several batches, one after the other (default: DAG param
        `rows_per_job`, else 2,000; at most 4,000, as each row costs up to two requests per job and
        the bridge takes 10,000 requests per job).
    :param wait_timeout: how long one deferral may wait for the Web Connector before the task fails.
    :param poll_interval: trigger pause after a transient bridge error, seconds.
    :param long_poll: seconds each trigger request waits at the bridge.
    """

    template_fields: Sequence[str] = (
        *_SyncStepOperator.template_fields,
        "manifest",
        "dry_run",
        "qbwc_bridge_conn_id",
        "company",
        "rows_per_job",
    )
    ui_color = "#e8f4e8"

    def __init__(
        self,
        *,
        manifest: Any,
        qbwc_bridge_conn_id: str = "qbwc_bridge_default",
        company: str | None = None,
        dry_run: bool | str | None = None,
        rows_per_job: int | str | None = None,
        wait_timeout: timedelta = timedelta(hours=12),
        poll_interval: float = 5.0,
        long_poll: float = 30.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._check_manifest(self.task_id, manifest)
        if isinstance(rows_per_job, int) and not 1 <= rows_per_job <= _MAX_ROWS_PER_JOB:
            raise ValueError(
                f"{self.task_id}: rows_per_job must be between 1 and {_MAX_ROWS_PER_JOB}, got {rows_per_job!r}"
            )
        if poll_interval <= 0 or long_poll < 0:
            raise ValueError(f"{self.task_id}: poll_interval must be > 0 and long_poll >= 0")
        self.manifest = manifest
        self.qbwc_bridge_conn_id = qbwc_bridge_conn_id
        self.company = company
        self.dry_run = dry_run
        self.rows_per_job = rows_per_job
        self.wait_timeout = wait_timeout
        self.poll_interval = float(poll_interval)
        self.long_poll = float(long_poll)

    # ---- Airflow entry points ---------------------------------------------------------------------

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after a job finished: keep its answers, continue from the saved progress."""
        if not event or event.get("status") == "error":
            from airflow.sdk.exceptions import AirflowException

            # A transient failure of the wait itself: the task's retries re-attach to the same job.
            raise AirflowException(f"waiting for the bridge job failed: {(event or {}).get('message')}")
        self.log.info("bridge job %s is %s; continuing", event.get("job_id"), event.get("status"))
        if event.get("job_id"):
            self._save_finished_job(context, str(event["job_id"]))
        return self.execute(context)

    def _save_finished_job(self, context: Any, job_id: str) -> None:
        """Keep the answers of the job the trigger waited for, so the resume reads them instead of
        enqueueing that job again (its key would find it, at the cost of one more post)."""
        from erpsync.hooks.qbwc_bridge import QbwcBridgeHook
        from erpsync.staging import run_staging_dir

        job = QbwcBridgeHook(self.qbwc_bridge_conn_id, company=self.company).get_job(job_id)
        if job.get("idempotency_key"):
            staging = run_staging_dir(context["ti"].dag_id, context["run_id"])
            self._progress(context, staging).save_job(job["idempotency_key"], job)

    def run_step(self, context: Any) -> dict[str, Any]:
        from erpsync.adapters.quickbooks import QuickBooksAdapter
        from erpsync.chunks import read_chunks
        from erpsync.operators._steps import upsert_step
        from erpsync.plan import PlanSpec

        ctx = self._step_context(context)
        mapping = self._mapping()
        spec = PlanSpec.from_mapping(mapping)
        if spec.target_object != "Customer":
            raise ConfigError(
                f"QuickBooksUpsertOperator writes Customer, but flow {self.flow} targets {spec.target_object}"
            )
        adapter = QuickBooksAdapter(self.qbwc_bridge_conn_id, company=self.company, long_poll=self.long_poll)
        dry_run = _as_bool(self._param(context, "dry_run", self.dry_run, False), "dry_run")
        if dry_run:
            return upsert_step(ctx, mapping, self.manifest, adapter, dry_run=True).to_xcom()
        rows_per_job = _as_number(
            self._param(context, "rows_per_job", self.rows_per_job, 2000), "rows_per_job"
        )
        if not 1 <= rows_per_job <= _MAX_ROWS_PER_JOB:
            raise ConfigError(f"rows_per_job must be between 1 and {_MAX_ROWS_PER_JOB}, got {rows_per_job}")
        progress = self._progress(context, ctx.staging)
        saved = progress.pending()
        if saved is None:  # the first execution of this task for this plan: what is left to write
            saved = progress.save_pending(*_pending(ctx, spec, read_chunks(self.manifest)))
        pending, already = saved
        self.log.info(
            "%d rows to write in batches of %d (%d written by an earlier try)",
            len(pending),
            rows_per_job,
            len(already),
        )
        results = self._run_programs(context, adapter, spec, pending, progress, rows_per_job)
        return _finish(ctx, spec, read_chunks(self.manifest), pending, results, already, adapter).to_xcom()

    def _progress(self, context: Any, staging) -> _Progress:
        """This task's progress folder for this plan (the plan manifest names its files by hash)."""
        import hashlib
        import json

        from erpsync.operators.qbwc import QbwcJobOperator

        plan = hashlib.sha256(json.dumps(self.manifest, sort_keys=True, default=str).encode()).hexdigest()
        return _Progress(staging, QbwcJobOperator.idempotency_key(context), plan)

    # ---- the programs ----------------------------------------------------------------------------

    def _run_programs(self, context, adapter, spec, pending, progress, rows_per_job) -> list[dict[str, Any]]:
        """Drive one UpsertProgram per batch not finished yet; defer whenever a job is not answered."""
        from erpsync.adapters.quickbooks import UpsertProgram
        from erpsync.operators.qbwc import QbwcJobOperator

        base = QbwcJobOperator.idempotency_key(context)
        out: list[dict[str, Any]] = []
        for b, start in enumerate(range(0, len(pending), rows_per_job)):
            saved = progress.batch(b)
            if saved is None:
                batch = pending.iloc[start : start + rows_per_job].to_dict("records")
                program = UpsertProgram(
                    _payloads(spec, batch),
                    identity=spec.identity,
                    prefix=f"{base}/b{b}",
                    prebuilt=progress.built(b),
                )
                saved = self._run_batch(adapter, spec, program, progress, b)
            adapter.job_ids.extend(saved["jobs"])
            adapter.call_log.calls.extend(saved["calls"])
            out.extend(saved["results"])
        return out

    def _run_batch(self, adapter, spec, program, progress, batch: int) -> dict[str, Any]:
        """Run one batch's program: jobs answered before come from `progress`, the next is enqueued
        (deferring while it waits). Each job is one call in the report, timed by the bridge."""
        from erpsync.adapters.quickbooks import job_results

        jobs: list[str] = []
        calls: list[dict[str, Any]] = []
        gen = program.run()
        try:
            job = next(gen)
            while True:
                done = progress.job(job.key)
                if done is None:
                    if not program.built.keys() <= program.prebuilt.keys():  # so a resume need not build them
                        progress.save_built(batch, program.built)
                        program.prebuilt = dict(program.built)
                    queued = adapter.hook.enqueue([r.xml for r in job.requests], idempotency_key=job.key)
                    if queued["state"] not in _TERMINAL:
                        self._wait(queued, job.phase, batch)
                    done = adapter.hook.get_job(queued["id"])
                    progress.save_job(job.key, done)
                jobs.append(done["id"])
                calls.append(_job_call(done, job.phase, spec.target_object, len(job.requests)))
                job = gen.send(job_results(done, len(job.requests)))
        except StopIteration:
            pass
        results = [r for r in program.results if r is not None]
        return progress.save_batch(batch, jobs=jobs, calls=calls, results=results)

    def _wait(self, queued: dict[str, Any], phase: str, batch: int) -> None:
        from erpsync.triggers.qbwc_job import QbwcJobTrigger

        self.log.info(
            "bridge job %s (batch %d, phase %s, %d requests) is %s; waiting in the triggerer",
            queued["id"],
            batch,
            phase,
            queued.get("request_count", 0),
            queued["state"],
        )
        self.defer(
            trigger=QbwcJobTrigger(
                queued["id"],
                self.qbwc_bridge_conn_id,
                poll_interval=self.poll_interval,
                long_poll=self.long_poll,
            ),
            method_name="execute_complete",
            timeout=self.wait_timeout,
        )


class _Progress:
    """What an upsert task already finished, saved in the run's staging folder (a local folder or
    object storage, whichever `erpsync.staging` uses), so a resume on any worker skips it.

    One folder per task (and map index) of the run and plan: a cleared task that re-planned starts
    afresh. The rows to write are fixed by the first execution (`pending.parquet` + `already.json`)
    and every execution reads them back from there, so each batch holds the same rows and builds the
    same requests (and job keys) whenever it runs. A finished batch keeps its jobs, calls and
    results; a job's answers are kept only while its batch runs. Files are written whole
    (`write_bytes_atomic`), so a crash never leaves half a file.
    """

    def __init__(self, staging, task_key: str, plan_digest: str):
        self.folder = staging / "qb-upsert-progress" / self._name(task_key)[:16] / plan_digest[:16]

    @staticmethod
    def _name(text: str) -> str:
        import hashlib

        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _read(self, path) -> Any:
        import json

        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def _write(self, path, value: Any) -> None:
        import json

        from erpsync.staging import write_bytes_atomic

        write_bytes_atomic(path, json.dumps(value, default=str).encode())

    def pending(self) -> tuple[Any, dict[str, Any]] | None:
        """The rows to write (a DataFrame: a resume converts only the batch it runs to dicts) and
        those an earlier try wrote; None before the first execution saved them."""
        import io

        import pandas as pd

        from erpsync.state import Identity

        already = self._read(self.folder / "already.json")
        if already is None:
            return None
        rows = pd.read_parquet(io.BytesIO((self.folder / "pending.parquet").read_bytes()))
        return rows, {k: Identity(k, target, digest) for k, target, digest in already}

    def save_pending(self, todo, already: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Keep the rows still to write and those an earlier try wrote; return them as read back."""
        import io

        from erpsync.staging import write_bytes_atomic

        buffer = io.BytesIO()
        todo.to_parquet(buffer, index=False)
        write_bytes_atomic(self.folder / "pending.parquet", buffer.getvalue())
        self._write(
            self.folder / "already.json", [[k, i.target_id, i.content_hash] for k, i in already.items()]
        )
        return self.pending()

    def batch(self, index: int) -> dict[str, Any] | None:
        return self._read(self.folder / f"batch-{index:05d}.json")

    def built(self, index: int) -> dict[str, Any]:
        """The requests batch `index` built so far (build key -> [kind, requestID, xml])."""
        return self._read(self.folder / f"built-{index:05d}.json") or {}

    def save_built(self, index: int, built: dict[str, Any]) -> None:
        self._write(self.folder / f"built-{index:05d}.json", built)

    def save_batch(self, index: int, **saved: list) -> dict[str, Any]:
        """Save a finished batch (`jobs`, `calls`, `results`), drop its job answers, return what was saved."""
        self._write(self.folder / f"batch-{index:05d}.json", saved)
        from erpsync.staging import glob_fresh

        for path in [*glob_fresh(self.folder, "job-*.json"), *glob_fresh(self.folder, "built-*.json")]:
            path.unlink(missing_ok=True)
        return saved

    def job(self, key: str) -> dict[str, Any] | None:
        return self._read(self.folder / f"job-{self._name(key)}.json")

    def save_job(self, key: str, job: dict[str, Any]) -> None:
        """Keep a job QuickBooks answered; a cancelled or expired one is asked for again on resume."""
        if job.get("state") in ("completed", "failed"):
            self._write(self.folder / f"job-{self._name(key)}.json", job)


def _job_call(job: dict[str, Any], phase: str, obj: str, rows: int) -> dict[str, Any]:
    """One bridge job as a call of the run report: its phase, rows, and queued-to-answered seconds."""
    started, finished = job.get("created_at"), job.get("finished_at")
    seconds = max(0.0, float(finished) - float(started)) if started and finished else 0.0
    return {"method": f"job:{phase}", "object": obj, "rows": rows, "seconds": round(seconds, 6)}


# ---- shared with upsert_step (kept here; see the module docstring) ---------------------------------------


def _pending(ctx, spec, plans) -> tuple[Any, dict[str, Any]]:
    """The create/update rows still to write, in plan order; and those an earlier try already wrote."""
    import pandas as pd

    frames = [p[p["_action"].isin(["create", "update"])] for p in plans]
    todo = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["_source_key"])
    if todo.empty:
        return todo, {}
    known = ctx.store.get_identities(ctx.flow, todo["_source_key"].astype(str).tolist())
    done = [
        str(k) in known and known[str(k)].content_hash == h
        for k, h in zip(todo["_source_key"], todo["_hash"], strict=True)
    ]
    already = {str(k): known[str(k)] for k, d in zip(todo["_source_key"], done, strict=True) if d}
    return todo[[not d for d in done]].reset_index(drop=True), already


def _payloads(spec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the program writes per row: create -> every field; update -> ListID, identity, update fields."""
    out = []
    for r in rows:
        payload: dict[str, Any] = {"_source_key": r["_source_key"]}
        if r["_action"] == "update":
            payload["_target_id"] = r["_target_id"]
        payload.update({c: r.get(c) for c in spec.payload_columns(r["_action"])})
        out.append(payload)
    return out


def _finish(ctx, spec, plans, pending, results, already, adapter):
    """Record identities, hashes and quarantine as upsert_step does; write the upsert + write-back files."""
    import pandas as pd

    from erpsync.chunks import ChunkWriter
    from erpsync.operators._steps import UPSERT_COUNTS, record_results, record_skips

    counts = dict.fromkeys(UPSERT_COUNTS, 0)
    counts["already_written"] = len(already)
    writeback: list[dict[str, Any]] = [
        {"_source_key": k, "target_id": ident.target_id, "action": "already_written"}
        for k, ident in already.items()
    ]
    for plan in plans:
        skip = record_skips(ctx, plan, counts)
        writeback.extend(
            {"_source_key": r["_source_key"], "target_id": r["_target_id"], "action": "skipped"}
            for r in skip.to_dict("records")
            if r.get("_target_id")
        )

    writer = ChunkWriter(ctx.staging, "upsert")
    if len(pending):
        if len(results) != len(pending):
            raise ConfigError(f"QuickBooks upsert answered {len(results)} results for {len(pending)} rows")
        merged = pending.reset_index(drop=True)
        res = pd.DataFrame(results)
        merged["_result"] = res["action"].to_numpy()
        merged["_target_id"] = (
            res["target_id"].where(res["target_id"].notna(), merged["_target_id"]).to_numpy()
        )
        merged["_error"] = res["error"].to_numpy()
        merged["_error_code"] = res["error_code"].to_numpy()
        ok = record_results(ctx, spec, merged)
        for result, n in merged["_result"].value_counts().items():
            counts[result] += int(n)
        writer.write(merged)
        writeback.extend(
            {"_source_key": r["_source_key"], "target_id": r["_target_id"], "action": r["_result"]}
            for r in ok.to_dict("records")
        )
    wb_writer = ChunkWriter(ctx.staging, "writeback")
    wb_writer.write(pd.DataFrame(writeback, columns=["_source_key", "target_id", "action"]))
    wb = wb_writer.close(columns=["_source_key", "target_id", "action"])
    out = writer.close(
        counts=counts,
        calls=adapter.call_log.summary(),
        jobs=list(dict.fromkeys(adapter.job_ids)),
        writeback=wb.to_xcom(),
    )
    return out
