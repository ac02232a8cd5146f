"""Decide, per mapped row, whether to create, update, skip, or stop and ask a human.

Order of evidence, strongest first:

1. the state store: the content hash last written for this source key is unchanged -> skip
   (no call to the target at all, which is what makes an unchanged rerun free);
2. the target's identity field (external id, DataExt, order reference) holds the source key's
   identity value -> update that record (or skip and remember it, when it already holds the values);
3. the flow's match rules, in order (email; company name + address line 1 + city + state;
   company + first + last name), compared trimmed and case-insensitively -> link and update;
4. nothing found -> create.

Un-mapping (targets whose adapter sets `unmap_on_cleared_identity`, e.g. Autotask): a source key the
state store links to a target record that still exists but no longer holds the identity (a user
cleared it) is un-mapped for good: the pair is remembered, and this and later runs skip the row
(neither re-linked by the match rules nor created again) until the user maps it again, by typing the
identity back into the target record (found by identity, the pair is linked again) or with
`erpsync remap` (the match rules or a create decide again).

Rows that cannot be placed (no identity value, a required parent such as a contact's company
missing) come out as `unplaceable`, and ambiguous or contested matches as `conflict`, each with a
reason: never dropped silently. Updates carry only the identity and the update fields, so
create-only fields (an enriched description) are never overwritten.

The content hash covers the identity and the update fields, the values an update would write: a
change in a create-only field therefore plans no write.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from erpsync.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from erpsync.adapters.base import SystemAdapter
    from erpsync.state import Identity

__all__ = [
    "ACTIONS",
    "KEY_BATCH",
    "PLAN_COLUMNS",
    "PlanSpec",
    "Planner",
    "content_hashes",
    "normalize",
]

ACTIONS = ("create", "update", "skip", "conflict", "unplaceable")
#: Keys per target lookup call: SOQL IN lists, OData filters and qbXML queries stay short.
KEY_BATCH = 500
#: Bookkeeping columns the plan adds in front of the target fields.
PLAN_COLUMNS = ["_source_key", "_action", "_target_id", "_hash", "_reason", "_record"]


@dataclass(frozen=True)
class PlanSpec:
    """What the planner needs from a mapping (built with `from_mapping`, or by hand in tests).

    :param identity: the target field that holds the source identity (e.g. "dataext.SalesforceId").
    :param match: match rules, each a list of target fields that must all be equal.
    :param fields: every mapped target field (written on create).
    :param update_fields: fields written on update; the identity is always written too (linking).
    :param requires: fields that must have a value to place a row (a contact's company id).
    """

    flow: str
    target_object: str
    identity: str
    fields: list[str]
    update_fields: list[str]
    match: list[list[str]] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        missing = [
            f
            for f in {*self.update_fields, *self.requires, *(f for rule in self.match for f in rule)}
            if f not in self.fields
        ]
        if self.identity not in self.fields:
            missing.append(self.identity)
        if missing:
            raise ConfigError(
                f"flow {self.flow!r}: plan refers to unmapped target field(s) {sorted(set(missing))}"
            )

    @classmethod
    def from_mapping(cls, mapping: Any, *, requires: Iterable[str] = ()) -> PlanSpec:
        """Build the spec from an `erpsync.mapping.Mapping`."""
        lines = getattr(mapping, "lines", None)
        return cls(
            flow=mapping.flow,
            target_object=mapping.target.object,
            identity=mapping.target.identity,
            # Child lines (order lines) are written with their header on create, never updated.
            fields=[*mapping.fields, *([lines.target] if lines is not None else [])],
            update_fields=list(mapping.update_fields),
            match=[list(rule) for rule in mapping.target.match],
            requires=list(requires) or list(getattr(mapping.target, "requires", None) or []),
        )

    @property
    def hash_fields(self) -> list[str]:
        return sorted({self.identity, *self.update_fields})

    def payload_columns(self, action: str) -> list[str]:
        """Target fields sent for `action`: everything on create, identity + update fields on update."""
        if action == "create":
            return list(self.fields)
        if action == "update":
            return list(dict.fromkeys([self.identity, *self.update_fields]))
        return []


def normalize(value: Any) -> Any:
    """Return a JSON value that compares equal for equal content (1 == 1.0, NaN == None, dates as ISO)."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 0) == 0:
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if type(value).__name__ in {"NAType", "NaTType"}:
        return None
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): normalize(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        return [normalize(v) for v in value]
    return str(value)


def _match_value(value: Any) -> str | None:
    v = normalize(value)
    if v is None:
        return None
    text = " ".join(str(v).split()).casefold()
    return text or None


def content_hashes(df: pd.DataFrame, columns: list[str]) -> list[str]:
    """Return the SHA-256 of each row's values in `columns` (sorted by name, normalized)."""
    cols = sorted(columns)
    present = [c for c in cols if c in df.columns]
    values = zip(*(df[c].tolist() for c in present), strict=True) if present else ([] for _ in range(len(df)))
    out = []
    for row in values:
        doc = dict(zip(present, (normalize(v) for v in row), strict=True))
        payload = json.dumps([[c, doc.get(c)] for c in cols], separators=(",", ":"), default=str)
        out.append(hashlib.sha256(payload.encode()).hexdigest())
    return out


class Planner:
    """Plan chunk after chunk for one run, remembering which target records are already claimed.

    :param spec: the flow's plan spec.
    :param adapter: the target system (read only: `read_by_keys`, and `describe` for the id field).
    :param known: a function returning the state store's identities for a list of source keys.
    :param unmapping: the state store's un-mapped pairs of this flow (`unmapped(keys)`,
        `unmap({key: target id})`, `remap(keys)`); used when the adapter sets
        `unmap_on_cleared_identity`.
    """

    def __init__(self, spec: PlanSpec, adapter: SystemAdapter, known, unmapping: Any = None):
        self.spec = spec
        self.adapter = adapter
        self.known = known
        self.unmapping = unmapping if getattr(adapter, "unmap_on_cleared_identity", False) else None
        self.id_field = adapter.describe(spec.target_object).id_field
        self.claimed: dict[str, str] = {}  # target id -> source key that took it in this run
        self.seen_keys: set[str] = set()
        self.counts: dict[str, int] = dict.fromkeys(ACTIONS, 0)

    def plan(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return `df` with the plan columns in front; one row out per row in."""
        import pandas as pd

        spec = self.spec
        out = df.reset_index(drop=True).copy()
        if "_source_key" not in out.columns:
            raise ConfigError(f"flow {spec.flow!r}: mapped rows lack the _source_key column")
        for f in spec.fields:
            if f not in out.columns:
                out[f] = None
        keys = [str(k) for k in out["_source_key"].tolist()]
        self._cols = {c: out[c].tolist() for c in out.columns}  # plain lists: .at[] per cell is slow
        hashes = content_hashes(out, spec.hash_fields)
        known: dict[str, Identity] = self.known(keys)
        n = len(out)
        action: list[str | None] = [None] * n
        target: list[str | None] = [None] * n
        reason: list[str | None] = [None] * n
        record = [False] * n

        todo = []
        for i, key in enumerate(keys):
            if key in self.seen_keys:
                action[i], reason[i] = "conflict", f"source key {key} appears twice in this run"
                continue
            self.seen_keys.add(key)
            ident = known.get(key)
            if ident is not None and ident.content_hash == hashes[i]:
                action[i], target[i], reason[i] = "skip", ident.target_id, "unchanged since last written"
                continue
            empty = [f for f in [spec.identity, *spec.requires] if normalize(self._cols[f][i]) in (None, "")]
            if empty:
                action[i] = "unplaceable"
                reason[i] = f"no value for {', '.join(empty)}: cannot place the row in {spec.target_object}"
                continue
            todo.append(i)

        self._by_identity(out, todo, action, target, reason, record)
        if self.unmapping is not None:
            self._unmapped(todo, keys, known, action, reason)
        for rule in spec.match:
            if rule == [spec.identity]:
                continue  # the identity lookup above already did exactly this
            self._by_rule(out, rule, [i for i in todo if action[i] is None], action, target, reason, record)
        for i in todo:
            if action[i] is None:
                action[i], reason[i] = "create", "no matching record in the target"
            if action[i] in ("update", "skip") and target[i]:
                owner = self.claimed.setdefault(str(target[i]), keys[i])
                if owner != keys[i]:
                    action[i] = "conflict"
                    reason[i] = f"{spec.target_object} {target[i]} is already matched by source key {owner}"
                    record[i] = False

        plan = pd.DataFrame(
            {
                "_source_key": keys,
                "_action": action,
                "_target_id": target,
                "_hash": hashes,
                "_reason": reason,
                "_record": record,
            }
        )
        body = out[[c for c in out.columns if c not in PLAN_COLUMNS]]
        result = pd.concat([plan, body], axis=1)
        for a, c in result["_action"].value_counts().items():
            self.counts[a] += int(c)
        return result

    # ---- matching ----------------------------------------------------------------------------------

    def _read(
        self, field_name: str, values: list[Any], columns: list[str], *, casefold: bool = False
    ) -> pd.DataFrame:
        wanted = sorted({str(normalize(v)) for v in values if normalize(v) not in (None, "")})
        if casefold:
            wanted = sorted({" ".join(v.split()) for v in wanted})
        import pandas as pd

        frames = [
            self.adapter.read_by_keys(
                self.spec.target_object,
                field_name,
                wanted[i : i + KEY_BATCH],
                columns=columns,
                casefold=casefold,
            )
            for i in range(0, len(wanted), KEY_BATCH)
        ]
        if not frames:
            return pd.DataFrame(columns=[self.id_field, *columns])
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def _compare_columns(self, extra: Iterable[str] = ()) -> list[str]:
        return list(dict.fromkeys([self.spec.identity, *self.spec.update_fields, *extra]))

    def _same_content(self, i: int, record: dict) -> bool:
        return all(
            normalize(self._cols[f][i]) == normalize(record.get(f))
            for f in self._compare_columns()
            if f in self._cols
        )

    def _by_identity(self, out, rows, action, target, reason, record) -> None:
        spec = self.spec
        if not rows:
            return
        found = self._read(
            spec.identity, [self._cols[spec.identity][i] for i in rows], self._compare_columns()
        )
        index: dict[str, list[dict]] = {}
        for rec in found.to_dict("records"):
            index.setdefault(str(normalize(rec.get(spec.identity))), []).append(rec)
        for i in rows:
            hits = index.get(str(normalize(self._cols[spec.identity][i])), [])
            if len(hits) > 1:
                ids = ", ".join(sorted(str(h[self.id_field]) for h in hits))
                action[i], reason[i] = "conflict", f"{len(hits)} target records share {spec.identity}: {ids}"
            elif hits:
                target[i] = str(hits[0][self.id_field])
                if self._same_content(i, hits[0]):
                    action[i], reason[i], record[i] = "skip", "target already holds these values", True
                else:
                    action[i], reason[i] = "update", f"found by {spec.identity}"

    def _unmapped(self, rows, keys, known, action, reason) -> None:
        """Skip the un-mapped pairs, remember newly cleared ones, forget those mapped again."""
        spec = self.spec
        held = self.unmapping.unmapped([keys[i] for i in rows])
        remapped = [keys[i] for i in rows if keys[i] in held and action[i] is not None]
        if remapped:
            self.unmapping.remap(remapped)
        # A stored link whose target record no longer holds the identity: cleared by a user?
        suspects = {
            i: str(known[keys[i]].target_id)
            for i in rows
            if action[i] is None
            and keys[i] not in held
            and keys[i] in known
            and normalize(known[keys[i]].target_id) not in (None, "")
        }
        cleared: dict[str, str] = {}
        if suspects:
            found = self._read(self.id_field, list(suspects.values()), [spec.identity])
            present = {str(normalize(r.get(self.id_field))): r for r in found.to_dict("records")}
            for i, tid in suspects.items():
                rec = present.get(str(normalize(tid)))
                # Gone altogether (deleted): nothing was un-mapped, the rules and a create decide.
                if rec is not None and str(normalize(rec.get(spec.identity))) != str(
                    normalize(self._cols[spec.identity][i])
                ):
                    cleared[keys[i]] = tid
        if cleared:
            self.unmapping.unmap(cleared)
            held = {**held, **{k: {"target_id": t} for k, t in cleared.items()}}
        for i in rows:
            if action[i] is None and keys[i] in held:
                tid = held[keys[i]].get("target_id")
                action[i] = "skip"
                reason[i] = (
                    f"un-mapped: {spec.target_object} {tid} no longer holds {spec.identity}; not linked or "
                    f"created again until mapped again (identity typed back, or `erpsync remap`)"
                )

    def _by_rule(self, out, rule, rows, action, target, reason, record) -> None:
        spec = self.spec
        rows = [i for i in rows if all(_match_value(self._cols[f][i]) is not None for f in rule)]
        if not rows:
            return
        found = self._read(
            rule[0], [self._cols[rule[0]][i] for i in rows], self._compare_columns(rule), casefold=True
        )
        index: dict[tuple, list[dict]] = {}
        for rec in found.to_dict("records"):
            index.setdefault(tuple(_match_value(rec.get(f)) for f in rule), []).append(rec)
        label = " + ".join(rule)
        for i in rows:
            hits = index.get(tuple(_match_value(self._cols[f][i]) for f in rule), [])
            if len(hits) > 1:
                ids = ", ".join(sorted(str(h[self.id_field]) for h in hits))
                action[i], reason[i] = "conflict", f"{len(hits)} target records match on {label}: {ids}"
            elif hits:
                hit = hits[0]
                linked = normalize(hit.get(spec.identity))
                if linked not in (None, "") and str(linked) != str(normalize(self._cols[spec.identity][i])):
                    action[i] = "conflict"
                    reason[i] = (
                        f"{spec.target_object} {hit[self.id_field]} matches on {label} but is linked to "
                        f"{spec.identity}={linked}"
                    )
                    continue
                target[i] = str(hit[self.id_field])
                if self._same_content(i, hit):
                    action[i], reason[i], record[i] = (
                        "skip",
                        f"matched on {label}; already holds these values",
                        True,
                    )
                else:
                    action[i], reason[i] = "update", f"matched on {label}"
