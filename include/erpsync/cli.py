"""The erpsync command: validate flows against the live systems, prune state, show runs and quarantine.

    erpsync validate [--flow FLOW ...] [--mappings-dir DIR] [--systems FILE] [--fix]
                                                        --fix: create what a flow needs in the target
                                                        (the Autotask flow's two Salesforce UDFs)
    erpsync prune [--older-than DAYS] [--state-url URL] [--staging-root DIR] [--keep-staging]
    erpsync runs [--flow FLOW] [--limit N]              the run history, newest first
    erpsync quarantine --flow FLOW [--all]              what is held back, by which rule, how often
    erpsync unmapped --flow FLOW                        pairs a user un-linked in the target
    erpsync remap --flow FLOW KEY [KEY ...]             let un-linked source records be linked again

`--systems` names a YAML/JSON file saying which adapter serves each system, e.g.

    salesforce: {adapter: salesforce, conn_id: salesforce_default}
    quickbooks: {adapter: memory, options: {path: /tmp/qb.db}}

Without it each system uses the adapter registered under its own name and its default connection
id. Connections come from Airflow (AIRFLOW_CONN_* or a secrets backend), never from this file.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from erpsync.errors import ConfigError, SyncError

__all__ = ["main"]

_COLOURS = {"green": "\033[32m", "red": "\033[31m", "disabled": "\033[33m"}
_RESET = "\033[0m"


def _load_systems(path: str | None) -> dict[str, dict[str, Any]]:
    if not path:
        return {}
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the systems file: {exc.strerror}", where=str(file)) from None
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML/JSON: {exc}", where=str(file)) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of system name -> {adapter, conn_id, options}", where=str(file))
    for system, spec in data.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("adapter"), str):
            raise ConfigError(f"system {system!r} needs an 'adapter' name", where=str(file))
        if "options" in spec and not isinstance(spec["options"], dict):
            raise ConfigError(f"system {system!r}: options must be a mapping", where=str(file))
    return data


#: Adapter options that let an adapter repair the target (`validate --fix`); off otherwise, so a plain
#: validate only reads.
_FIX_OPTIONS = {"autotask": "create_udfs"}


def _adapter_factory(systems: dict[str, dict[str, Any]], *, fix: bool = False):
    from erpsync.adapters import get_adapter
    from erpsync.adapters.validate import DEFAULT_CONN_IDS

    def build(system: str):
        spec = systems.get(system, {"adapter": system, "conn_id": DEFAULT_CONN_IDS.get(system)})
        options = dict(spec.get("options") or {})
        if spec["adapter"] in _FIX_OPTIONS:
            options[_FIX_OPTIONS[spec["adapter"]]] = fix
        return get_adapter(spec["adapter"], conn_id=spec.get("conn_id"), **options)

    return build


def _paint(text: str, status: str, colour: bool) -> str:
    return f"{_COLOURS[status]}{text}{_RESET}" if colour else text


def cmd_validate(args: argparse.Namespace) -> int:
    from erpsync.adapters.validate import validate_flows
    from erpsync.mapping import list_flows

    systems = _load_systems(args.systems)
    flows = args.flow or list_flows(args.mappings_dir)
    if not flows:
        print("no mapping files found", file=sys.stderr)
        return 1
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    results = validate_flows(flows, args.mappings_dir, _adapter_factory(systems, fix=args.fix))
    for r in results:
        print(
            _paint(f"{r.status.upper():8} {r.flow}", r.status, colour) + (f"  ({r.path})" if r.path else "")
        )
        for line in r.problems:
            print(_paint(f"  ✗ {line}", "red", colour))
        for line in r.warnings:
            print(f"  ! {line}")
        for line in r.passed:
            if args.verbose or line.startswith("fixed: "):
                print(f"  ✓ {line}")
    red = [r.flow for r in results if r.status == "red"]
    print(
        f"\n{len(results) - len(red)} of {len(results)} flow(s) ok"
        + (f"; red: {', '.join(red)}" if red else "")
    )
    return 1 if red else 0


def prune_staging(root, older_than_days: float) -> int:
    """Delete staged run folders older than the cutoff (a folder or object storage; see erpsync.staging)."""
    from erpsync.staging import prune_staging as prune

    return prune(root, older_than_days)


def cmd_prune(args: argparse.Namespace) -> int:
    from erpsync.staging import staging_root
    from erpsync.state import StateStore

    store = StateStore(args.state_url) if args.state_url else StateStore()
    result = store.prune(older_than_days=args.older_than)
    print(
        f"pruned {store!r}: {result.runs_deleted} run(s) older than {args.older_than:g} days, "
        f"{result.payloads_cleared} expired quarantine payload(s) cleared, "
        f"{result.resolved_deleted} resolved quarantine entr(y/ies) deleted"
    )
    from erpsync.state.activity import activity_retention_days, prune_activity

    print(
        f"pruned record activity: {prune_activity(store)} row(s) older than "
        f"{activity_retention_days():g} days (ERPSYNC_ACTIVITY_RETENTION_DAYS)"
    )
    if not args.keep_staging:
        root = Path(args.staging_root) if args.staging_root else staging_root()
        print(f"pruned staging {root}: {prune_staging(root, args.older_than)} run folder(s) removed")
    return 0


def _table(rows: list[list[Any]], head: list[str]) -> str:
    cells = [head, *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [min(60, max(len(r[i]) for r in cells)) for i in range(len(head))]
    return "\n".join(
        "  ".join(c[:60].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def cmd_runs(args: argparse.Namespace) -> int:
    from erpsync.state import StateStore

    store = StateStore(args.state_url) if args.state_url else StateStore()
    runs = store.list_runs(args.flow, limit=args.limit)
    head = [
        "flow",
        "run",
        "status",
        "started",
        "seconds",
        "created",
        "updated",
        "skipped",
        "failed",
        "quarantined",
    ]
    rows = [
        [
            r["flow"],
            r["run_id"],
            r["status"],
            _when(r["started_at"]),
            r["duration_seconds"],
            r["created"],
            r["updated"],
            r["skipped"],
            r["failed"],
            r["quarantined"],
        ]
        for r in runs
    ]
    print(_table(rows, head) if rows else "no runs recorded")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from erpsync.state import StateStore

    store = StateStore(args.state_url) if args.state_url else StateStore()
    entries = store.quarantine_entries(args.flow, open_only=not args.all)
    head = [
        "source key",
        "stage",
        "rule",
        "column",
        "value",
        "attempts",
        "first seen",
        "last seen",
        "resolved",
        "message",
    ]
    rows = [
        [
            e["source_key"],
            e["stage"],
            e["rule"],
            e["column"],
            e["value"],
            e["attempts"],
            _when(e["first_seen"]),
            _when(e["last_seen"]),
            _when(e["resolved_at"]),
            e["message"],
        ]
        for e in entries
    ]
    print(_table(rows, head) if rows else f"nothing in quarantine for {args.flow}")
    return 0


def cmd_unmapped(args: argparse.Namespace) -> int:
    from erpsync.state import StateStore

    store = StateStore(args.state_url) if args.state_url else StateStore()
    pairs = store.unmapped(args.flow)
    rows = [[k, p["target_id"], _when(p["unmapped_at"]), p["run_id"]] for k, p in sorted(pairs.items())]
    head = ["source key", "target id", "un-mapped at", "run"]
    print(_table(rows, head) if rows else f"no un-mapped pairs in {args.flow}")
    return 0


def cmd_remap(args: argparse.Namespace) -> int:
    from erpsync.state import StateStore

    store = StateStore(args.state_url) if args.state_url else StateStore()
    known = store.unmapped(args.flow, args.keys)
    unknown = [k for k in args.keys if k not in known]
    n = store.remap(args.flow, args.keys)
    print(f"{n} pair(s) of {args.flow} may be linked again at the next run")
    if unknown:
        print(f"not un-mapped in {args.flow}: {', '.join(unknown)}", file=sys.stderr)
        return 1
    return 0


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="erpsync", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check connections and mappings against the live target metadata")
    v.add_argument("--flow", action="append", help="flow to check (repeatable; default: every mapping)")
    v.add_argument(
        "--mappings-dir", default=None, help="default: ERPSYNC_MAPPINGS_DIR, then include/mappings"
    )
    v.add_argument(
        "--systems", default=os.environ.get("ERPSYNC_SYSTEMS_FILE"), help="adapter per system (YAML)"
    )
    v.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    v.add_argument("-v", "--verbose", action="store_true", help="also list what passed")
    v.add_argument(
        "--fix", action="store_true", help="create what a flow needs in the target (Autotask's two UDFs)"
    )
    v.set_defaults(func=cmd_validate)
    p = sub.add_parser("prune", help="delete old runs, clear expired quarantine payloads")
    p.add_argument("--older-than", type=_days, default=90.0, help="days of run history to keep (default 90)")
    p.add_argument(
        "--state-url", default=None, help="default: ERPSYNC_STATE_URL, then SQLite in AIRFLOW_HOME"
    )
    p.add_argument(
        "--staging-root", default=None, help="default: ERPSYNC_STAGING_ROOT, then AIRFLOW_HOME/staging"
    )
    p.add_argument("--keep-staging", action="store_true", help="leave staged run folders alone")
    p.set_defaults(func=cmd_prune)
    r = sub.add_parser("runs", help="list the run history (newest first)")
    r.add_argument("--flow", default=None)
    r.add_argument("--limit", type=int, default=20)
    r.add_argument("--state-url", default=None)
    r.set_defaults(func=cmd_runs)
    q = sub.add_parser("quarantine", help="list a flow's quarantined rows: rule, column, value, attempts")
    q.add_argument("--flow", required=True)
    q.add_argument("--all", action="store_true", help="include resolved entries")
    q.add_argument("--state-url", default=None)
    q.set_defaults(func=cmd_quarantine)
    u = sub.add_parser("unmapped", help="list the pairs a user un-linked in the target (cleared identity)")
    u.add_argument("--flow", required=True)
    u.add_argument("--state-url", default=None)
    u.set_defaults(func=cmd_unmapped)
    m = sub.add_parser(
        "remap", help="let un-mapped source records be linked by the match rules (or created) again"
    )
    m.add_argument("--flow", required=True)
    m.add_argument("keys", nargs="+", metavar="KEY", help="source keys (e.g. Salesforce ids)")
    m.add_argument("--state-url", default=None)
    m.set_defaults(func=cmd_remap)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SyncError as exc:
        print(f"erpsync {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
