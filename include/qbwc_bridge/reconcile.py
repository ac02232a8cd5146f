"""Reconciling a lost exchange: ask QuickBooks what became of it before anything is sent again.

An exchange whose answer never arrived is `lost` (conversation.py). Before new work, one recovery
document asks QuickBooks about the old message set (`oldMessageSetID`) and carries a probe query for
each unacknowledged write. A stored answer settles a request; otherwise only a clean probe answer
decides (found: settled without resending; no match: safe to send again); anything else proves nothing,
is asked again in a later session and after MAX_PROBE_ATTEMPTS becomes `in_doubt`, never resent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from erpsync.qbwc_bridge import _qbxml, _sql
from erpsync.qbwc_bridge.jobs import settle_jobs
from erpsync.qbwc_bridge.models import Exchange, JobRequest

__all__ = [
    "MAX_PROBE_ATTEMPTS",
    "REPLAY_MARK",
    "Outcome",
    "apply_recovery",
    "recovery_document",
    "recovery_refused",
]

log = logging.getLogger(__name__)

#: Probe rounds (one per Web Connector session) that may answer "cannot tell" before an unacknowledged
#: write is reported `in_doubt` (never resent: an operator decides).
MAX_PROBE_ATTEMPTS = 5
#: status_message of a replay-safe write (DataExtAdd) sent again after its answer was lost: its
#: duplicate refusal then means the lost send had applied it.
REPLAY_MARK = "replayed after its answer was lost"


@dataclass
class Outcome:
    """Requests an answer settled: applied (ok) or not (failed, incl. in_doubt)."""

    ok: int = 0
    failed: int = 0


def _now() -> float:
    return time.time()


def recovery_document(s: Session, t, *, default_version: str, new_exchange: Callable[..., int]) -> str | None:
    """The recovery document for the oldest lost exchange this session has not asked about yet.

    One probe round per lost exchange per session: a probe QuickBooks could not answer cleanly is
    asked again in a later session (up to MAX_PROBE_ATTEMPTS), while other work goes on.
    """
    lost_id = s.scalar(_sql.OLDEST_LOST_WORK, {"company_id": t.company_id})
    if lost_id is None:
        return None
    lost = s.get(Exchange, lost_id)
    asked = set(
        s.scalars(
            select(Exchange.old_message_set_id).where(
                Exchange.ticket == t.ticket, Exchange.kind == "recovery", Exchange.state == "acked"
            )
        )
    )
    if lost.message_set_id in asked:
        lost = next(
            (
                e
                for e in s.scalars(
                    select(Exchange)
                    .where(
                        Exchange.company_id == t.company_id,
                        Exchange.state == "lost",
                        Exchange.kind == "work",
                    )
                    .order_by(Exchange.id)
                )
                if e.message_set_id not in asked
            ),
            None,
        )
        if lost is None:
            return None
    requests = list(
        s.scalars(select(JobRequest).where(JobRequest.exchange_id == lost.id, JobRequest.state == "lost"))
    )
    probes: dict[str, int] = {}
    unprobed: list[int] = []
    parts: list[str] = []
    now = _now()
    for jr in requests:
        if jr.kind.endswith(_qbxml.SAFE_TO_RESEND_SUFFIXES):
            continue  # settled from the stored answer if QuickBooks has one, else resent
        if jr.kind in _qbxml.REPLAY_SAFE_KINDS:
            continue  # settled from the stored answer if QuickBooks has one, else replayed
        probe = _qbxml.probe_for(jr.kind, jr.request_xml, f"probe.{jr.id}")
        if probe is None:
            if jr.kind.endswith(_qbxml.EDIT_GUARDED_SUFFIXES):
                continue  # a replay of an applied Mod is refused with 3200, never applied twice
            unprobed.append(jr.id)
        else:
            probes[f"probe.{jr.id}"] = jr.id
            parts.append(probe.query_xml)
    meta = {"lost_exchange": lost.id, "probes": probes, "unprobed": unprobed}
    # No newMessageSetID here: QuickBooks keeps one recovery record, and it must stay the lost one's.
    doc = _qbxml.envelope(
        parts,
        old_message_set_id=lost.message_set_id,
        version=t.qbxml_version or default_version,
    )
    new_exchange(
        s,
        t,
        kind="recovery",
        count=len(parts),
        doc=doc,
        message_set_id=_qbxml.message_set_id(),
        old_message_set_id=lost.message_set_id,
        probes=json.dumps(meta),
    )
    lost.state = "recovering"
    lost.acked_at = now
    s.flush()
    return doc


def apply_recovery(
    s: Session, t, ex: Exchange, answers: list[_qbxml.RsInfo], store_answer: Callable[..., str]
) -> Outcome:
    """Settle a lost exchange's requests from QuickBooks' stored answers, then from the probes."""
    meta = json.loads(ex.probes or "{}")
    lost = s.get(Exchange, meta["lost_exchange"])
    requests = {
        jr.qb_request_id: jr
        for jr in s.scalars(
            select(JobRequest).where(JobRequest.exchange_id == lost.id, JobRequest.state == "lost")
        )
    }
    by_id = {jr.id: jr for jr in requests.values()}
    out = Outcome()
    now = _now()
    settled: set[int] = set()
    # 1. QuickBooks' own record of the lost message set (error recovery), if it kept one: whole
    #    *Rs with their *Ret, or *Rs carrying only the ErrorRecovery ids (parse_response_doc reads both).
    for rs in answers:
        jr = requests.get(rs.request_id)
        if jr is None:
            continue
        jr.state = "sent"
        result = store_answer(jr, rs, t.ticket)
        settled.add(jr.id)
        out.ok += result == "ok"
        out.failed += result == "failed"
    # 2. Probe answers for writes QuickBooks' record did not settle. Only a clean answer decides.
    probe_rs = {rs.request_id: rs for rs in answers}
    for probe_rid, jr_id in meta.get("probes", {}).items():
        jr = by_id.get(jr_id)
        if jr is None or jr.id in settled:
            continue
        settled.add(jr.id)
        jr.updated_at = now
        probe = _qbxml.probe_for(jr.kind, jr.request_xml, probe_rid)
        verdict = (
            _qbxml.probe_verdict(probe, probe_rs.get(probe_rid))
            if probe is not None
            else _qbxml.Verdict("unknown", reason="the request can no longer be probed")
        )
        if verdict.outcome == "found":
            from lxml import etree

            ret = verdict.ret
            jr.state, jr.status_code, jr.status_severity = "done", 0, "Info"
            how = (
                f" ({verdict.reason} and the record holds every field it set)"
                if probe.sent is not None
                else ""
            )
            jr.status_message = f"reconciled: the unacknowledged request had been applied; found by {probe.key}{how}, not resent"
            jr.list_id = _qbxml._first_text(ret, "ListID")
            jr.txn_id = _qbxml._first_text(ret, "TxnID")
            jr.edit_sequence = _qbxml._first_text(ret, "EditSequence")
            jr.response_xml = etree.tostring(ret, encoding="unicode")
            jr.record_count = 1
            t.reconciled += 1
        elif verdict.outcome == "absent":
            jr.state = "pending"  # provably not in QuickBooks (or a Mod that did not run): send again
        elif verdict.outcome == "stale":
            # A Mod whose record changed since (a user edit) and does not hold what we sent: not
            # proof either way, so send it again over the record as it is now.
            fresh = _qbxml._first_text(verdict.ret, "EditSequence") or ""
            jr.request_xml = _qbxml.with_edit_sequence(jr.request_xml, fresh)
            jr.state = "pending"
            jr.status_message = (
                f"unacknowledged; {probe.key} changed since ({verdict.reason}) and does not hold every "
                "field sent: resent with the fresh EditSequence"
            )
        else:
            out.failed += doubt(jr, verdict, probe.key if probe is not None else jr.kind, now)
    # 3. Whatever is left was not probed: resend what is replay-safe, report what cannot be verified.
    for jr in by_id.values():
        if jr.id not in settled and jr.state == "lost":
            out.failed += unprobed(jr, meta, now)
    still_lost = any(jr.state == "lost" for jr in by_id.values())
    lost.state = "lost" if still_lost else "reconciled"
    ex.state = "acked"
    s.flush()
    settle_jobs(session=s, job_ids={jr.job_id for jr in by_id.values()})
    return out


def doubt(jr: JobRequest, verdict: _qbxml.Verdict, key: str, now: float) -> int:
    """A probe that proves nothing: keep the request lost to ask again, or after MAX_PROBE_ATTEMPTS
    report it `in_doubt` with the last answer. Never resent. Returns 1 when it became in_doubt."""
    jr.probe_attempts = (jr.probe_attempts or 0) + 1
    jr.status_code, jr.status_severity, jr.updated_at = verdict.status_code, verdict.severity, now
    if jr.probe_attempts < MAX_PROBE_ATTEMPTS:
        jr.status_message = (
            f"unacknowledged; probe {jr.probe_attempts} of {MAX_PROBE_ATTEMPTS} ({key}) could not tell "
            f"whether it was applied ({verdict.reason}); asked again in a later session, not resent"
        )
        return 0
    jr.state = "in_doubt"
    jr.status_message = (
        f"in doubt: sent to QuickBooks but never acknowledged, and {jr.probe_attempts} probes ({key}) "
        f"could not tell whether it was applied (last answer: {verdict.reason}); not resent: check "
        "QuickBooks and apply it by hand if it is missing"
    )
    log.warning("request %s (%s) is in doubt: %s", jr.id, jr.kind, verdict.reason)
    return 1


def unprobed(jr: JobRequest, meta: dict, now: float) -> int:
    """Settle a lost request that had no probe; returns 1 when it became in_doubt."""
    jr.updated_at = now
    if jr.id in meta.get("unprobed", []):
        jr.state, jr.status_code, jr.status_severity = "in_doubt", None, "Error"
        jr.status_message = (
            "in doubt: sent to QuickBooks but never acknowledged, and nothing identifies its result "
            "(no name/RefNumber) to probe; not resent: check QuickBooks and apply it by hand if it is missing"
        )
        return 1
    if jr.id in meta.get("probes", {}).values():
        return 0  # probed, and the probe is still out (an unanswered recovery): stays lost
    jr.state = "pending"  # a query, a Mod (EditSequence-guarded) or a replay-safe DataExtAdd
    if jr.kind in _qbxml.REPLAY_SAFE_KINDS:
        jr.status_message = f"{REPLAY_MARK}: QuickBooks refuses a duplicate, so it cannot apply twice"
    return 0


def recovery_refused(s: Session, ex: Exchange, reason: str) -> int:
    """QuickBooks refused a whole recovery document (an HRESULT): every probe in it proved nothing.

    The requests it asked about count one probe attempt each (so a document QuickBooks always
    refuses ends in `in_doubt`, not in a loop); unprobed ones are settled as after an answer.
    """
    meta = json.loads(ex.probes or "{}")
    ex.state = "acked"  # answered (with an HRESULT): this session does not ask again
    target = s.get(Exchange, meta.get("lost_exchange"))
    if target is None:
        return 0
    requests = list(
        s.scalars(select(JobRequest).where(JobRequest.exchange_id == target.id, JobRequest.state == "lost"))
    )
    now, doubted = _now(), 0
    probed = set(meta.get("probes", {}).values())
    verdict = _qbxml.Verdict("unknown", severity="Error", reason=reason)
    for jr in requests:
        if jr.id in probed:
            doubted += doubt(jr, verdict, jr.kind, now)
        else:
            doubted += unprobed(jr, meta, now)
    target.state = "lost" if any(jr.state == "lost" for jr in requests) else "reconciled"
    s.flush()
    settle_jobs(session=s, job_ids={jr.job_id for jr in requests})
    return doubted
