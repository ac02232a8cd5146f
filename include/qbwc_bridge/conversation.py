"""What the bridge says to the Web Connector, call by call, with all state kept in the store.

`soap.py` parses envelopes and renders replies; this module decides. Each method loads the ticket,
acts, and commits before it returns, so any replica can answer the next call of the same session.

Never posting twice rests on three rules:

1. Every work document carries a fresh `newMessageSetID`, and the exchange row (state `sent`, with its
   requests marked `sent`) is committed *before* the document is returned to the Web Connector.
2. An exchange whose answer never arrived (a second sendRequestXML, connectionError, closeConnection,
   or a new authenticate while it is outstanding, or a bridge crash) becomes `lost`.
3. Before any new work, a lost exchange is reconciled (`reconcile.py`): one recovery document asks QuickBooks about the
   old message set (`oldMessageSetID`) and carries a probe query for each unacknowledged write (Adds by
   name for list objects, by RefNumber plus customer, matched on the CustomerRef child the request
   used, ListID or FullName, for transactions; Mods by ListID/TxnID). A stored answer, whole `*Rs` or
   ErrorRecovery ids only, settles the request. Otherwise only a clean probe answer decides: a found
   record settles it without resending; 1 (no match) or 500 (no such object) makes it safe to send
   again. Any other answer (1000, 1010, 3260, a lock code, an HRESULT for the whole document, no
   answer) proves nothing: the request stays `lost`, is probed again in the next session (one probe
   round per lost exchange per session, counted in `probe_attempts`) and after MAX_PROBE_ATTEMPTS
   becomes `in_doubt` with the last answer, never resent; its job ends `failed`. A Mod counts as
   applied only when the record holds every field it sent; an unchanged EditSequence means it did not
   run (resent as is), a changed record that lacks our values (a user edit) gets the Mod resent over
   the fresh EditSequence. An Add with nothing to probe is `in_doubt` at once. Queries are resent; a
   DataExtAdd is replayed, QuickBooks refusing a duplicate (3180) meaning the lost send had applied it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from erpsync.errors import RetriableSourceError
from erpsync.qbwc_bridge import _qbxml, _sql, reconcile, retention, throttle
from erpsync.qbwc_bridge.config import BridgeSettings
from erpsync.qbwc_bridge.db import Store
from erpsync.qbwc_bridge.jobs import expire_jobs, settle_jobs
from erpsync.qbwc_bridge.models import Exchange, JobRequest
from erpsync.qbwc_bridge.passwords import (
    hash_password,
    hash_token,
    needs_rehash,
    verify_password,
    work_factor,
)
from erpsync.qbwc_bridge.reconcile import MAX_PROBE_ATTEMPTS, REPLAY_MARK, Outcome

__all__ = ["MAX_PROBE_ATTEMPTS", "SERVER_VERSION", "Conversation"]

log = logging.getLogger(__name__)

SERVER_VERSION = "erpsync qbwc-bridge 0.1"
#: Transient QuickBooks answers the bridge resends by itself, up to MAX_ATTEMPTS sends in all.
MAX_ATTEMPTS = 3
_TRANSIENT_CODES = {1000, 1010}
_LOCK_CODES = {3170, 3175, 3176, 3180}
_LOCK_TEXTS = ("in use", "locked", "lock", "modified by another user", "busy")
_PARSE_HRESULT = "0x80040400"


@functools.lru_cache(maxsize=4)
def _dummy_hash(n: int) -> str:
    """A hash at today's work factor `n`, verified for unknown users so they cost what known ones do."""
    return hash_password("timing-equaliser")


def _now() -> float:
    return time.time()


def _version_key(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def _version_text(key: tuple[int, int]) -> str:
    return f"{key[0]}.{key[1]}"


class _TicketRow:
    """A ticket read with Core; attribute writes are remembered and saved in one UPDATE.

    Every SOAP call of a session loads and changes its ticket: the ORM's identity map and flush cost
    more than the SQL itself. Reads and writes look like the ORM object's, so the code reads the same.
    """

    __slots__ = ("_changed", "_values")

    def __init__(self, row):
        object.__setattr__(self, "_values", dict(row._mapping))
        object.__setattr__(self, "_changed", {})

    def __getattr__(self, name: str):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value) -> None:
        self._values[name] = value
        self._changed[name] = value

    def save(self, s: Session) -> None:
        if self._changed:
            params = {f"b_{name}": value for name, value in self._changed.items()}
            s.execute(_sql.ticket_update(tuple(sorted(self._changed))), {"b_ticket": self.ticket, **params})
            self._changed.clear()


class Conversation:
    """One object per bridge process; every call is a short transaction on the store."""

    def __init__(self, store: Store, settings: BridgeSettings):
        self.store = store
        self.settings = settings
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[int, bytes] = {}
        #: Prunes old qbXML payloads at most hourly, started by successful logins (retention.py).
        self.pruner = retention.AutoPruner(store)

    # -- helpers ------------------------------------------------------------------------------------

    def _load_ticket(self, s: Session, ticket: str) -> _TicketRow | None:
        """The store keys tickets by SHA-256 (a copy of the database holds no usable ticket)."""
        if not ticket:
            return None
        row = s.execute(_sql.TICKET, {"ticket": hash_token(ticket)}).first()
        return _TicketRow(row) if row is not None else None

    def _lock_company(self, s: Session, company_id: int | None) -> None:
        """PostgreSQL: wait for, then hold, the company's lock until commit (see `_sql.LOCK_COMPANY`).

        Taken first in every write of a Web Connector call, so two sessions of one company (two PCs,
        a retry storm, several replicas) never pick, mark or settle the same rows at once.
        """
        if company_id is not None and self.store.is_postgres:
            s.execute(_sql.LOCK_COMPANY, {"id": company_id})

    def _locked_ticket(self, s: Session, ticket: str) -> _TicketRow | None:
        """The ticket, read again once its company is locked (a concurrent call may have changed it)."""
        t = self._load_ticket(s, ticket)
        if t is None or t.company_id is None or not self.store.is_postgres:
            return t
        self._lock_company(s, t.company_id)
        return self._load_ticket(s, ticket)

    def _ticket(self, s: Session, ticket: str) -> _TicketRow | None:
        t = self._locked_ticket(s, ticket)
        if t is None or t.state != "open" or t.expires_at < _now():
            return None
        t.expires_at = _now() + self.settings.ticket_ttl_seconds  # sliding: long runs stay valid
        return t

    @contextmanager
    def _session(self, ticket: str, *, live: bool = True) -> Iterator[tuple[Session, _TicketRow | None]]:
        """A write transaction with the ticket loaded (`live`: only an open, unexpired one); saves it."""
        with self.store.session() as s:
            t = self._ticket(s, ticket) if live else self._locked_ticket(s, ticket)
            yield s, t
            if t is not None:
                t.save(s)

    def _mark_lost(self, s: Session, exchange_id: int | None) -> None:
        """The answer to this exchange will never come: its writes must be reconciled before a resend."""
        if exchange_id is None:
            return
        ex = s.get(Exchange, exchange_id)
        if ex is None or ex.state != "sent":
            return
        if ex.kind == "recovery":
            # A recovery document only queries; the exchange it was reconciling is still unresolved.
            ex.state = "lost"
            meta = json.loads(ex.probes or "{}")
            target = s.get(Exchange, meta.get("lost_exchange"))
            if target is not None and target.state == "recovering":
                target.state = "lost"
            s.flush()  # the hot paths read with Core statements, which do not autoflush
            return
        ex.state = "lost"
        s.flush()
        s.execute(
            update(JobRequest)
            .where(JobRequest.exchange_id == ex.id, JobRequest.state == "sent")
            .values(state="lost", updated_at=_now())
        )
        log.warning(
            "exchange %s (message set %s) was not acknowledged; it will be reconciled",
            ex.id,
            ex.message_set_id,
        )

    def record_error(self, ticket: str, message: str) -> None:
        """Keep `message` for getLastError (used by the SOAP error boundary)."""
        with self._session(ticket, live=False) as (_s, t):
            if t is not None:
                t.last_error = message[:2000]

    # -- the Web Connector methods ------------------------------------------------------------------

    def server_version(self) -> str:
        return SERVER_VERSION

    def client_version(self, version: str) -> str:
        """Warn (never refuse) clients older than 2.1.0.30, the version QbSync also warns below.

        Only the first 40 characters are read: a version is "2.3.0.215", and int() of a megabyte of
        digits would raise on every call (Python caps integer strings at 4300 digits).
        """
        version = (version or "")[:40]
        parts = [int(p) for p in re.findall(r"\d{1,9}", version)[:4]]
        if parts and parts < [2, 1, 0, 30]:
            return f"W:This bridge is tested with Web Connector 2.1.0.30 or later; you run {version}."
        return ""

    def authenticate(self, username: str, password: str, client_addr: str = "") -> list[str]:
        """[ticket, ""|company file|"none"|"nvu", postpone seconds, minimum run interval seconds].

        `client_addr` (the caller's IP) feeds the login backoff: see throttle.py.
        """
        min_run = str(self.settings.min_run_every_seconds) if self.settings.min_run_every_seconds else ""
        keys = throttle.Keys.of(username or "", client_addr)
        verdict = throttle.check(self.store, self.settings, keys)
        if verdict.wait > 0:  # backing off: answer without looking at the password
            log.warning(
                "authenticate for user %r from %s refused unchecked (login backoff, %.0f s left)",
                (username or "")[:100],
                client_addr or "?",
                verdict.wait,
            )
            return ["", "nvu", "", ""]
        with self.store.reading() as s:
            company = s.execute(_sql.LOGIN, {"username": username or ""}).first()
            stored = company.password_hash if company else _dummy_hash(work_factor())
            company_id = company.id if company else None
            company_file = company.company_file if company else ""
        # scrypt is slow on purpose: check it outside any transaction, so no lock waits on it. An
        # unknown user pays the same scrypt (against the dummy hash), so timing tells no names.
        if company_id is None:
            verify_password(password or "", stored)
        if company_id is None or not self._password_ok(company_id, password or "", stored):
            blocked = throttle.record_failure(self.store, self.settings, keys)
            log.warning(
                "authenticate refused for user %r from %s%s",
                (username or "")[:100],
                client_addr or "?",
                f"; logins blocked for {blocked:.0f} s" if blocked else "",
            )
            return ["", "nvu", "", ""]
        if verdict.needs_write:
            throttle.record_success(self.store, keys)
        self.pruner.maybe_start(self.settings.payload_retention_days)
        with self.store.session() as s:
            self._lock_company(s, company_id)
            now = _now()
            busy_error = None
            open_tickets = s.execute(_sql.OPEN_TICKETS, {"company_id": company_id}).all()
            live = [row for row in open_tickets if self._is_live(row.expires_at, now)]
            if live:
                # One company file, one session: the other one is still talking to QuickBooks.
                outstanding, state = 0, "busy"
                busy_error = (
                    "Another Web Connector session for this company file is running (last call "
                    f"{now - (live[0].expires_at - self.settings.ticket_ttl_seconds):.0f} s ago); "
                    "this update was refused with 'busy'. Try again later."
                )
            else:
                # Any open session is dead (quiet past the bound): supersede it. Whatever the company
                # has sent and never had acknowledged is now unknown and must be reconciled.
                if open_tickets:
                    s.execute(
                        _sql.SUPERSEDE, {"b_tickets": [row.ticket for row in open_tickets], "b_now": now}
                    )
                for exchange_id in s.scalars(_sql.SENT_EXCHANGES, {"company_id": company_id}).all():
                    self._mark_lost(s, exchange_id)
                expire_jobs(session=s, company_id=company_id, now=now)
                outstanding = self._outstanding(s, company_id)
                state = "open" if outstanding else "idle"
            ticket = secrets.token_urlsafe(24)
            s.execute(
                _sql.INSERT_TICKET,
                {
                    "ticket": hash_token(ticket),  # only the Web Connector ever holds the ticket itself
                    "company_id": company_id,
                    "state": state,
                    "created_at": now,
                    "expires_at": now + self.settings.ticket_ttl_seconds,
                    "closed_at": None if state == "open" else now,
                    "last_error": busy_error,
                    "baseline": outstanding,
                    "exchanges": 0,
                    "requests_ok": 0,
                    "requests_failed": 0,
                    "reconciled": 0,
                },
            )
            if state == "busy":
                log.warning("authenticate for company %s answered busy: another session is live", company_id)
                return [ticket, "busy", "", min_run]
            if not outstanding:
                return [ticket, "none", "", min_run]
            return [ticket, company_file or "", "", min_run]

    def _is_live(self, expires_at: float, now: float) -> bool:
        """An open session is live while its ticket is valid and it called within the stale bound.

        The ticket's expiry slides by the TTL on each call, so its last call was `expires_at - TTL`.
        """
        last_call = expires_at - self.settings.ticket_ttl_seconds
        return expires_at > now and now - last_call < self.settings.session_stale_seconds

    def _password_ok(self, company_id: int, password: str, stored: str) -> bool:
        """Verify with scrypt, remembering a success as a keyed HMAC for this process.

        The Web Connector sends the same password on every scheduled run; 50 company files polling
        at once would otherwise queue 50 scrypt computations (~0.4 s CPU each at N=2^17). Only
        successes are remembered (a wrong password always pays the full scrypt), the entry is tied to
        the stored hash (a new password invalidates it), and the HMAC key never leaves process memory.
        A hash stored with weaker parameters is replaced after the first successful check.
        """
        tag = hmac.new(self._cache_key, f"{stored}\0{password}".encode(), hashlib.sha256).digest()
        remembered = self._verified.get(company_id)
        if remembered is not None and hmac.compare_digest(remembered, tag):
            return True
        if not verify_password(password, stored):
            return False
        if needs_rehash(stored):
            stored = self._rehash(company_id, password, stored)
            tag = hmac.new(self._cache_key, f"{stored}\0{password}".encode(), hashlib.sha256).digest()
        self._verified[company_id] = tag
        return True

    def _rehash(self, company_id: int, password: str, stored: str) -> str:
        """Store the password again with today's scrypt parameters (it was just verified); return the hash.

        Hashed outside the transaction; the UPDATE only replaces the hash it verified against, so a
        password changed meanwhile (`company set-password`) is never overwritten.
        """
        fresh = hash_password(password)
        with self.store.session() as s:
            changed = s.execute(
                update(_sql.COMPANIES)
                .where(_sql.COMPANIES.c.id == company_id, _sql.COMPANIES.c.password_hash == stored)
                .values(password_hash=fresh)
            ).rowcount
        if changed:
            log.info("password hash of company %s upgraded to the current scrypt parameters", company_id)
            return fresh
        return stored

    def _outstanding(self, s: Session, company_id: int) -> int:
        return s.scalar(_sql.OUTSTANDING, {"company_id": company_id})

    def send_request_xml(
        self, ticket: str, hcp_response: str, company_file: str, country: str, major: str, minor: str
    ) -> str:
        """Return the next qbXML document, or "" (getLastError follows) when there is none."""
        with self._session(ticket) as (s, t):
            if t is None:
                return ""
            t.country = (country or t.country or "US")[:4]
            company, hcp_max = None, None
            if hcp_response or t.qbxml_version is None:  # the session's first document: negotiate
                company = s.execute(_sql.COMPANY_FILE_IDS, {"id": t.company_id}).one()
            if hcp_response:
                t.hcp_response = hcp_response[:1_000_000]
                refusal, hcp_max = self._check_hcp(t, hcp_response, company)
                if refusal:
                    t.last_error = refusal
                    return ""
            t.qbxml_version = self._version(s, t, major, minor, hcp_max, company)
            if t.pending_exchange_id is not None:
                # sendRequestXML twice in a row: the answer to the previous document was lost.
                self._mark_lost(s, t.pending_exchange_id)
                t.pending_exchange_id = None
            doc = reconcile.recovery_document(
                s, t, default_version=self.settings.qbxml_version, new_exchange=self._new_exchange
            ) or self._work_document(s, t)
            if doc is None:
                t.last_error = self._nothing_to_send(s, t.company_id)
                return ""
            return doc

    def _nothing_to_send(self, s: Session, company_id: int) -> str:
        """getLastError's text when sendRequestXML has no document: what is left, and why it waits."""
        left = dict(s.execute(_sql.UNSETTLED_BY_STATE, {"company_id": company_id}).all())
        if not left:
            return "Nothing left to send: every queued request has been answered."
        parts = []
        if left.get("lost"):
            n = left["lost"]
            parts.append(
                f"{n} request{'s' if n != 1 else ''} sent without an acknowledgement "
                f"await{'s' if n == 1 else ''} reconciliation in a later session (this session already "
                f"asked QuickBooks about {'it' if n == 1 else 'them'})"
            )
        if left.get("sent"):
            n = left["sent"]
            parts.append(f"{n} request{'s' if n != 1 else ''} still await{'s' if n == 1 else ''} an answer")
        return "; ".join(parts) + "; nothing more to send now."

    def _check_hcp(
        self, t: _TicketRow, hcp_response: str, company
    ) -> tuple[str | None, tuple[int, int] | None]:
        """(refusal if the company file is not ours, highest SupportedQBXMLVersion QuickBooks listed)."""
        try:
            hcp = _qbxml.read_hcp(hcp_response)
        except _qbxml.BadRequestXml as exc:
            log.warning("unreadable HCP response for ticket %s...: %s", t.ticket[:8], exc.message)
            return None, None  # the version from qbXMLMajorVers still applies
        found = hcp.file_ids.get((company.owner_id or "").upper())
        if found and found.upper() != company.file_id.upper():
            return (
                f"The company file open in QuickBooks belongs to another application entry (FileID {found}, "
                f"expected {company.file_id} for {company.name}); nothing was sent. Open the right company "
                "file or re-add the .qwc for this one."
            ), None
        return None, (tuple(hcp.max_version) if hcp.max_version else None)

    def _version(
        self, s: Session, t: _TicketRow, major: str, minor: str, hcp_max: tuple[int, int] | None, company
    ) -> str:
        """The session's qbXML version: never above ours, the client's, QuickBooks' HCP answer, nor any
        version this session already used (later calls carry no HCP answer; the cap must stay).

        `company` is given on the session's first document: what the HCP answer reports is kept as the
        company's version (enqueue refuses requests it cannot take), and caps a session without one.
        """
        try:
            client = (int(major), int(minor or 0))
        except (TypeError, ValueError):
            client = None
        reported = [v for v in (client, hcp_max) if v is not None]
        if company is not None:
            if hcp_max is not None:  # QuickBooks itself answered: that is the company's version now
                known = _version_text(min(reported))
                if known != company.qbxml_version:
                    s.execute(_sql.SET_COMPANY_VERSION, {"b_id": t.company_id, "b_version": known})
            elif company.qbxml_version:  # the request processor may speak more than the file's QuickBooks
                reported.append(_version_key(company.qbxml_version))
        caps = [_version_key(self.settings.qbxml_version), *reported]
        if t.qbxml_version:
            caps.append(_version_key(t.qbxml_version))
        return _version_text(min(caps))

    def _new_exchange(self, s: Session, t: _TicketRow, *, kind: str, count: int, doc: str, **extra) -> int:
        """Record the document as `sent` (committed before it is returned); the ticket now awaits it."""
        ex_id = s.execute(
            _sql.INSERT_EXCHANGE,
            {
                "company_id": t.company_id,
                "ticket": t.ticket,
                "kind": kind,
                "state": "sent",
                "request_count": count,
                "size_bytes": len(doc),
                "created_at": _now(),
                "old_message_set_id": None,
                "probes": None,
                **extra,
            },
        ).inserted_primary_key[0]
        t.pending_exchange_id = ex_id
        t.exchanges += 1
        return ex_id

    def _work_document(self, s: Session, t: _TicketRow) -> str | None:
        cfg = self.settings
        # Plain column tuples, not ORM objects: this runs for every exchange and the batch can be large.
        rows = s.execute(
            _sql.PENDING_BATCH, {"company_id": t.company_id, "limit": cfg.max_batch_requests}
        ).all()
        if not rows:
            return None
        first_mode = rows[0].on_error
        picked = []
        parts: list[str] = []
        restarted: list[int] = []
        size = 0
        for jr in rows:
            if picked and (jr.solo or picked[0].solo):
                break
            # stopOnError applies to the whole document, so a stop-job travels alone.
            if first_mode == "stop" and jr.job_id != rows[0].job_id:
                break
            if first_mode == "continue" and jr.on_error == "stop":
                break
            xml = jr.request_xml  # tagged with its requestID at enqueue
            if jr.kind.endswith("QueryRq") and (jr.iterator_id or "iterator" in jr.request_xml):
                if jr.iterator_id and jr.iterator_ticket == t.ticket:
                    xml = _qbxml.retag(
                        xml, request_id=jr.qb_request_id, iterator="Continue", iterator_id=jr.iterator_id
                    )
                elif jr.iterator_id or _qbxml.iterator_of(xml) == "Start":
                    # An iterator lives inside one QuickBooks session: start over in a new one.
                    xml = _qbxml.retag(xml, request_id=jr.qb_request_id, iterator="Start")
                    restarted.append(jr.id)
            if picked and size + len(xml) > cfg.max_batch_bytes:
                break
            picked.append(jr)
            parts.append(xml)
            size += len(xml)
        message_set_id = _qbxml.message_set_id()
        doc = _qbxml.envelope(
            parts,
            on_error="stopOnError" if first_mode == "stop" else "continueOnError",
            new_message_set_id=message_set_id,
            version=t.qbxml_version or cfg.qbxml_version,
        )
        ex_id = self._new_exchange(
            s, t, kind="work", count=len(picked), doc=doc, message_set_id=message_set_id
        )
        now = _now()
        if restarted:
            s.execute(
                update(_sql.REQUESTS)
                .where(_sql.REQUESTS.c.id.in_(restarted))
                .values(iterator_id=None, response_xml=None, record_count=0, iterator_ticket=t.ticket)
            )
        marked = s.execute(
            _sql.MARK_SENT,
            {
                "b_ids": [jr.id for jr in picked],
                "b_company_id": t.company_id,
                "b_exchange_id": ex_id,
                "b_now": now,
            },
        ).rowcount
        if marked != len(picked):
            # Another session took some of these rows: sending them would post them twice. The company
            # lock (PostgreSQL) and the write lock (SQLite) rule this out; this is the last line.
            raise RetriableSourceError(
                f"company {t.company_id}: {len(picked) - marked} of {len(picked)} requests picked for a document "
                "were no longer pending when marked sent (another session holds them); nothing was sent",
                where="sendRequestXML",
            )
        queued = sorted({jr.job_id for jr in picked if jr.job_state == "queued"})
        if queued:
            s.execute(_sql.START_JOBS, {"b_ids": queued, "b_now": now})
        if cfg.debug_qbxml:
            log.debug("sendRequestXML ticket=%s document=%s", t.ticket[:8], doc)
        return doc

    def receive_response_xml(self, ticket: str, response: str, hresult: str, message: str) -> int:
        """Store the answers; return percent done (100 = finished, negative = see getLastError)."""
        parsed, unreadable = None, None
        if response or not hresult:
            # Parsed before the transaction: the write lock is held for the database work only.
            try:
                parsed = _qbxml.parse_response_doc(response or "")
            except Exception as exc:  # unusable answer: treat like a lost one, reconcile next time
                unreadable = exc
        with self._session(ticket) as (s, t):
            if t is None:
                return -1
            ex = None
            if t.pending_exchange_id is not None:
                ex = s.execute(_sql.EXCHANGE, {"id": t.pending_exchange_id}).first()
            t.pending_exchange_id = None
            if ex is None or ex.state != "sent":
                t.last_error = "receiveResponseXML without a matching sendRequestXML; the answer was ignored."
                return -1
            acked = _now()
            if not response and hresult:
                return self._hresult(s, t, self._acked(s, ex.id, acked), hresult, message)
            if unreadable is not None:
                self._acked(s, ex.id, acked)
                self._mark_lost(s, ex.id)
                t.last_error = f"QuickBooks response could not be read ({unreadable}); it will be reconciled."
                return -1
            _set_status, answers = parsed
            if ex.kind == "recovery":
                outcome = reconcile.apply_recovery(
                    s, t, self._acked(s, ex.id, acked), answers, self._store_answer
                )
            else:
                outcome, unknown = self._apply_work(s, t, ex.id, answers)
                s.execute(
                    _sql.ACK_EXCHANGE,
                    {"b_id": ex.id, "b_state": "lost" if unknown else "acked", "b_acked_at": acked},
                )
            t.requests_ok += outcome.ok
            t.requests_failed += outcome.failed
            return self._percent(s, t)

    @staticmethod
    def _acked(s: Session, ex_id: int, when: float) -> Exchange:
        """The exchange as an ORM object, for the rare paths (recovery answers, HRESULTs, bad XML)."""
        ex = s.get(Exchange, ex_id)
        ex.acked_at = when
        return ex

    def _percent(self, s: Session, t: _TicketRow) -> int:
        left = self._outstanding(s, t.company_id)
        if not left:
            return 100
        done = t.requests_ok + t.requests_failed + t.reconciled
        return max(1, min(99, done * 100 // max(1, done + left)))

    def _hresult(self, s: Session, t: _TicketRow, ex: Exchange, hresult: str, message: str) -> int:
        text = f"QuickBooks could not process the document ({hresult}): {message}"
        t.last_error = text
        if ex.kind == "recovery":
            t.requests_failed += reconcile.recovery_refused(s, ex, f"HRESULT {hresult}: {message}")
            return -1
        if hresult.lower() != _PARSE_HRESULT:
            # Not a parse error: QuickBooks may have applied part of the batch. Reconcile, never assume.
            ex.state = "sent"
            self._mark_lost(s, ex.id)
            return -1
        ex.state = "acked"
        requests = list(s.scalars(select(JobRequest).where(JobRequest.exchange_id == ex.id)))
        now = _now()
        if len(requests) > 1:
            # A parse error rejects the whole document before anything runs: isolate the culprit.
            for jr in requests:
                jr.state, jr.solo, jr.updated_at = "pending", True, now
                jr.attempts -= 1
            t.last_error = None
            s.flush()
            return self._percent(s, t)
        for jr in requests:
            jr.state, jr.status_message, jr.updated_at = "failed", text, now
            jr.status_severity = "Error"
        t.requests_failed += len(requests)
        s.flush()
        settle_jobs(session=s, job_ids={jr.job_id for jr in requests})
        return self._percent(s, t)

    def _answer_values(self, jr: JobRequest, rs: _qbxml.RsInfo, ticket: str) -> tuple[str, dict]:
        """What one *Rs changes on its request: ("ok" | "failed" | "more", full column values).

        Returns values instead of mutating the row so a whole batch is written with one executemany.
        """
        v = dict(zip(_sql.ANSWER_COLUMNS, _sql.answer_fields(jr), strict=True))
        v["id"], v["updated_at"], v["status_code"] = jr.id, _now(), rs.status_code
        v["status_severity"], v["status_message"] = rs.severity, rs.message
        failed = rs.status_code >= 1000 or rs.severity == "Error"
        if failed and (jr.status_message or "").startswith(REPLAY_MARK):
            if self._transient(rs):
                v["status_message"] = f"{REPLAY_MARK}; then {rs.message}"  # keep the mark for the next try
            elif rs.kind == "DataExtAddRs" and rs.status_code == 3180:
                # The replay is refused because the value exists: the lost send had written it.
                v.update(status_code=0, status_severity="Info", response_xml=rs.xml, iterator_id=None)
                v.update(
                    state="done",
                    status_message=f"reconciled: {REPLAY_MARK}, and QuickBooks refused the "
                    f"replay as a duplicate ({rs.status_code}: {rs.message}): the lost send had applied it",
                )
                return "ok", v
        if not failed and jr.iterator_id and jr.response_xml:
            from lxml import etree

            # A later page: gather its records into the first page's response.
            merged = _qbxml.parse_fragment(jr.response_xml, max_bytes=512_000_000)
            for ret in rs.rets:
                merged.append(ret)
            merged.set("iteratorRemainingCount", str(rs.remaining))
            v["response_xml"] = etree.tostring(merged, encoding="unicode")
        else:
            v.update(
                response_xml=rs.xml, list_id=rs.list_id, txn_id=rs.txn_id, edit_sequence=rs.edit_sequence
            )
        if not failed:
            v["record_count"] = (jr.record_count or 0) + len(rs.rets)
        if not failed and rs.remaining > 0 and rs.iterator_id:
            v.update(state="pending", iterator_id=rs.iterator_id, iterator_ticket=ticket)
            return "more", v
        if failed and self._transient(rs) and jr.attempts < MAX_ATTEMPTS:
            v["state"] = "pending"
            return "more", v
        v.update(state="failed" if failed else "done", iterator_id=None)
        return ("failed" if failed else "ok"), v

    def _store_answer(self, jr: JobRequest, rs: _qbxml.RsInfo, ticket: str) -> str:
        """Apply one *Rs to a loaded row (the rare recovery path); return "ok", "failed" or "more"."""
        result, values = self._answer_values(jr, rs, ticket)
        for name, value in values.items():
            if name != "id":
                setattr(jr, name, value)
        return result

    @staticmethod
    def _transient(rs: _qbxml.RsInfo) -> bool:
        if rs.status_code in _TRANSIENT_CODES:
            return True
        text = (rs.message or "").lower()
        return rs.status_code in _LOCK_CODES and any(word in text for word in _LOCK_TEXTS)

    def _apply_work(
        self, s: Session, t: _TicketRow, ex_id: int, answers: list[_qbxml.RsInfo]
    ) -> tuple[Outcome, bool]:
        """Store a work document's answers; (counts, whether some request's outcome is unknown)."""
        # Column tuples, not ORM objects: _answer_values only reads, and the batch is written in one go.
        requests = {
            jr.qb_request_id: jr for jr in s.execute(_sql.ANSWERED_BATCH, {"exchange_id": ex_id}).all()
        }
        out = Outcome()
        stopped: dict[str, str] = {}
        updates: list[dict] = []
        answered: set[int] = set()
        for rs in answers:
            jr = requests.get(rs.request_id)
            if jr is None or jr.state != "sent" or jr.id in answered:
                continue
            result, values = self._answer_values(jr, rs, t.ticket)
            updates.append(values)
            answered.add(jr.id)
            if result == "ok":
                out.ok += 1
            elif result == "failed":
                out.failed += 1
                stopped.setdefault(jr.job_id, f"not run: request {jr.position} failed ({rs.status_code})")
        now = _now()
        unknown = False
        for jr in requests.values():
            if jr.state != "sent" or jr.id in answered:
                continue
            values = dict(zip(_sql.ANSWER_COLUMNS, _sql.answer_fields(jr), strict=True))
            values["id"], values["updated_at"] = jr.id, now
            if jr.job_id in stopped:
                # stopOnError: QuickBooks skipped everything after the failing request.
                values.update(state="failed", status_severity="Error", status_message=stopped[jr.job_id])
                out.failed += 1
            else:
                # No answer in a document QuickBooks did answer: whether it ran is unknown, so reconcile.
                values.update(
                    state="lost", status_message="QuickBooks returned no response for this requestID"
                )
                unknown = True
            updates.append(values)
        _sql.executemany(s, _sql.BULK_ANSWER, updates)
        job_ids = {jr.job_id for jr in requests.values()}
        if stopped:
            job_modes = dict(
                s.execute(
                    select(_sql.JOBS.c.id, _sql.JOBS.c.on_error).where(_sql.JOBS.c.id.in_(list(stopped)))
                ).all()
            )
            for job_id, reason in stopped.items():
                if job_modes.get(job_id) == "stop":
                    n = s.execute(
                        update(_sql.REQUESTS)
                        .where(_sql.REQUESTS.c.job_id == job_id, _sql.REQUESTS.c.state == "pending")
                        .values(
                            state="failed", status_message=reason, status_severity="Error", updated_at=now
                        )
                    ).rowcount
                    out.failed += n or 0
        settle_jobs(session=s, job_ids=job_ids)
        return out, unknown

    def get_last_error(self, ticket: str) -> str:
        with self.store.reading() as s:
            t = self._load_ticket(s, ticket)
            if t is None:
                return "Invalid or expired ticket: authenticate again."
            return t.last_error or "No error recorded for this session."

    def connection_error(self, ticket: str, hresult: str, message: str) -> str:
        """QuickBooks could not be opened: record why and give up for this run ("done").

        Only an open session may write: a closed or superseded ticket (or a stranger replaying one)
        must not put text on the status page.
        """
        with self._session(ticket, live=False) as (s, t):
            if t is not None and t.state == "open":
                t.last_error = f"QuickBooks could not be opened ({hresult or 'no HRESULT'}): {message or ''}"[
                    :2000
                ]
                self._mark_lost(s, t.pending_exchange_id)
                t.pending_exchange_id = None
        return "done"

    def close_connection(self, ticket: str) -> str:
        with self._session(ticket, live=False) as (s, t):
            if t is None:
                return "Invalid or expired ticket."
            self._mark_lost(s, t.pending_exchange_id)
            t.pending_exchange_id = None
            if t.state == "open":
                t.state = "closed"
            t.closed_at = _now()
            text = f"OK: {t.requests_ok} succeeded, {t.requests_failed} failed"
            if t.reconciled:
                text += f", {t.reconciled} reconciled"
            return text
