"""`qbwc-bridge`: run the bridge and manage its companies and tokens.

    qbwc-bridge serve [--host H] [--port P] [--database-url URL] [--migrate] [--ssl-certfile F --ssl-keyfile F]
                      [--allow-plain-http]        plain HTTP off loopback only with this flag
    qbwc-bridge migrate [--database-url URL]
    qbwc-bridge company add NAME [--user U] [--company-file PATH] [--every MINUTES] [--password-env VAR]
    qbwc-bridge company set-password NAME [--password-env VAR]
    qbwc-bridge company list
    qbwc-bridge qwc NAME                      print the .qwc file
    qbwc-bridge token create --name N [--company A --company B] [--rights read,write[,delete][,admin]]
                             [--expires-in 30d]   print a new jobs-API token (shown once)
    qbwc-bridge token list                    names, companies, rights, expiry, state (never secrets)
    qbwc-bridge token revoke NAME|ID
    qbwc-bridge prune [--older-than DAYS]     remove the qbXML of jobs finished DAYS ago (default:
                                              QBWC_BRIDGE_PAYLOAD_RETENTION_DAYS, 30)

Every command but `migrate` (and `serve --migrate`) first checks that the database is at the code's
schema and otherwise says to run `qbwc-bridge migrate`.

Every option also comes from the environment (QBWC_BRIDGE_DATABASE_URL, QBWC_BRIDGE_HOST, ...).
Passwords are read from stdin or from the environment variable named by --password-env, never from
the command line (where `ps` and shell history would keep them). `add-company`/`set-password` are
accepted as aliases of the `company` subcommands.

`serve` refuses plain HTTP on an address other than loopback (Web Connector passwords and API tokens
would cross the network in clear) unless --allow-plain-http / QBWC_BRIDGE_ALLOW_PLAIN_HTTP=1 says TLS
is terminated in front of it. A token without --company may touch every company; rights: read (jobs,
status, .qwc, metrics), write (enqueue, cancel), delete (ListDelRq/TxnDelRq), admin (manage tokens).
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import os
import sys

from erpsync.errors import ConfigError

__all__ = ["main"]


def _settings(args: argparse.Namespace):
    from erpsync.qbwc_bridge.config import load_settings

    overrides = {}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    return load_settings(**overrides)


def _password(args: argparse.Namespace) -> str:
    if args.password_env:
        value = os.environ.get(args.password_env, "")
        if not value:
            raise ConfigError(
                f"environment variable {args.password_env} is empty or unset", where="--password-env"
            )
        return value
    if sys.stdin.isatty():
        first = getpass.getpass("Web Connector password: ")
        if first != getpass.getpass("again: "):
            raise ConfigError("the two passwords differ")
        return first
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise ConfigError("no password on stdin", where="stdin")
    return value


def cmd_migrate(args: argparse.Namespace) -> int:
    from erpsync.qbwc_bridge.db import migrate

    settings = _settings(args)
    migrate(settings.database_url)
    print("qbwc-bridge: database is at the latest schema", file=sys.stderr)
    return 0


def plain_http_refusal(host: str, ssl_certfile: str | None, allow_plain_http: bool) -> str | None:
    """Why `serve` must not start on `host` without TLS, or None (loopback, TLS, or allowed)."""
    if ssl_certfile or allow_plain_http:
        return None
    name = (host or "").strip("[]")
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = name == "localhost"
    if loopback:
        return None
    return (
        f"refusing to serve plain HTTP on {host}: Web Connector passwords and API tokens would cross the "
        "network unencrypted. Pass --ssl-certfile/--ssl-keyfile, or --allow-plain-http "
        "(QBWC_BRIDGE_ALLOW_PLAIN_HTTP=1) when a TLS proxy in front of the bridge is the only way in"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from erpsync.qbwc_bridge.app import create_app
    from erpsync.qbwc_bridge.db import migrate

    settings = _settings(args)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise ConfigError("--ssl-certfile and --ssl-keyfile go together", where="serve")
    refusal = plain_http_refusal(args.host, args.ssl_certfile, args.allow_plain_http)
    if refusal:  # before anything is migrated or served
        raise ConfigError(refusal, where="serve --host")
    if args.migrate:
        migrate(settings.database_url)
    app = create_app(settings)
    kwargs = {}
    if args.ssl_certfile:
        kwargs.update(ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, **kwargs)
    return 0


def _store(args: argparse.Namespace):
    from erpsync.qbwc_bridge.db import Store

    return Store(_settings(args).database_url)


def cmd_company_add(args: argparse.Namespace) -> int:
    from erpsync.qbwc_bridge.crud import add_company

    password = _password(args)
    store = _store(args)
    with store.session() as s:
        company = add_company(
            session=s,
            name=args.name,
            password=password,
            username=args.user,
            company_file=args.company_file or "",
            description=args.description or "",
            run_every_minutes=args.every,
        )
        print(f"added company {company.name} (Web Connector user {company.username})")
    return 0


def cmd_set_password(args: argparse.Namespace) -> int:
    from erpsync.qbwc_bridge.crud import set_password

    password = _password(args)
    with _store(args).session() as s:
        set_password(session=s, name=args.name, password=password)
    print(f"password of {args.name} changed")
    return 0


def cmd_company_list(args: argparse.Namespace) -> int:
    from erpsync.qbwc_bridge.crud import list_companies

    with _store(args).session() as s:
        for c in list_companies(session=s):
            print(
                f"{c.name}\tuser={c.username}\tfile={c.company_file or '(open file)'}\tevery={c.run_every_minutes}m"
            )
    return 0


def cmd_qwc(args: argparse.Namespace) -> int:
    from erpsync.qbwc_bridge.crud import company_by_name
    from erpsync.qbwc_bridge.qwc import render_qwc

    settings = _settings(args)
    with _store(args).session() as s:
        company = company_by_name(session=s, name=args.name)
        if company is None:
            raise ConfigError(f"no company named {args.name!r}", where="qwc NAME")
        sys.stdout.write(render_qwc(company, public_url=settings.public_url, app_name=settings.app_name))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from erpsync.qbwc_bridge.retention import prune_payloads

    settings = _settings(args)
    days = settings.payload_retention_days if args.older_than is None else args.older_than
    if days <= 0 and args.older_than is None:
        raise ConfigError(
            "QBWC_BRIDGE_PAYLOAD_RETENTION_DAYS is 0 (pruning off); pass --older-than DAYS to prune anyway",
            where="prune",
        )
    store = _store(args)
    try:
        report = prune_payloads(store, older_than_days=days)
    finally:
        store.dispose()
    print(
        f"pruned the qbXML of {report.jobs} jobs finished more than {days:g} days ago "
        f"({report.requests} requests) and the HCP answers of {report.sessions} sessions"
    )
    return 0


def _check_schema(args: argparse.Namespace) -> None:
    """Refuse to work on a store that is not at the code's schema, naming the command that fixes it.

    Without this a fresh database answers `company add` with a raw "no such table" traceback.
    """
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    from erpsync.qbwc_bridge.db import MIGRATIONS
    from erpsync.secure import redact_url, sqlite_path

    url = _settings(args).database_url
    shown = redact_url(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    path = sqlite_path(url)
    current = None
    if path is None or os.path.exists(path):  # never create an empty SQLite file just to look
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
            raise ConfigError(
                f"cannot open the bridge database {shown}: {reason.replace(url, shown)}",
                where="--database-url",
            ) from None
        finally:
            engine.dispose()
    if current is None:
        raise ConfigError(
            f"the bridge database {shown} was never migrated (no schema): run `qbwc-bridge migrate` "
            "(or `qbwc-bridge serve --migrate`) first",
            where="--database-url",
        )
    if current != head:
        raise ConfigError(
            f"the bridge database {shown} is at schema {current}, this version needs {head}: "
            "run `qbwc-bridge migrate`",
            where="--database-url",
        )


def cmd_token_create(args: argparse.Namespace) -> int:
    from erpsync.qbwc_bridge.crud import create_token, parse_duration

    expires = parse_duration(args.expires_in) if args.expires_in else None
    with _store(args).session() as s:
        token = create_token(
            session=s, name=args.name, companies=args.company, rights=args.rights, expires_in=expires
        )
    print(token)
    scope = ", ".join(args.company) if args.company else "every company"
    print(f"token {args.name!r} for {scope}, rights {args.rights}; shown once, store it now", file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    import time

    from erpsync.qbwc_bridge.crud import list_tokens, token_view

    def when(ts):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else "-"

    with _store(args).session() as s:
        for t in list_tokens(session=s):
            v = token_view(t)
            print(
                f"{v['id']}\t{v['name']}\t{v['state']}\tcompanies={','.join(v['companies'] or ['*'])}"
                f"\trights={','.join(v['rights'])}\texpires={when(v['expires_at'])}"
            )
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from erpsync.qbwc_bridge.crud import revoke_token

    with _store(args).session() as s:
        revoked = [(t.id, t.name) for t in revoke_token(session=s, ref=args.ref)]
    if not revoked:
        print(f"qbwc-bridge: {args.ref!r} was already revoked", file=sys.stderr)
    for token_id, name in revoked:
        print(f"revoked token {name!r} (id {token_id})")
    return 0


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="qbwc-bridge", description="QuickBooks Web Connector bridge")
    parser.add_argument("--database-url", default=None, help="default: QBWC_BRIDGE_DATABASE_URL")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bridge")
    serve.add_argument("--host", default=env("QBWC_BRIDGE_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(env("QBWC_BRIDGE_PORT", "8443")))
    serve.add_argument("--migrate", action="store_true", help="run `alembic upgrade head` first")
    serve.add_argument("--ssl-certfile", default=env("QBWC_BRIDGE_SSL_CERTFILE"))
    serve.add_argument("--ssl-keyfile", default=env("QBWC_BRIDGE_SSL_KEYFILE"))
    serve.add_argument("--log-level", default=env("QBWC_BRIDGE_LOG_LEVEL", "info"))
    serve.add_argument(
        "--allow-plain-http",
        action="store_true",
        default=env("QBWC_BRIDGE_ALLOW_PLAIN_HTTP", "").lower() in {"1", "true", "yes"},
        help="serve plain HTTP on a non-loopback address (only behind a TLS-terminating proxy)",
    )
    serve.add_argument("--database-url", dest="database_url", default=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="bring the database to the latest schema")
    mig.add_argument("--database-url", dest="database_url", default=argparse.SUPPRESS)
    mig.set_defaults(func=cmd_migrate)

    def company_add_args(p):
        p.add_argument("name")
        p.add_argument("--user", help="Web Connector user name (default: the company name)")
        p.add_argument("--company-file", help="full path of the .QBW file QBWC should open")
        p.add_argument("--description")
        p.add_argument("--every", type=int, default=15, help="RunEveryNMinutes in the .qwc")
        p.add_argument("--password-env", help="read the password from this environment variable")
        p.add_argument("--database-url", dest="database_url", default=argparse.SUPPRESS)
        p.set_defaults(func=cmd_company_add)

    def set_password_args(p):
        p.add_argument("name")
        p.add_argument("--password-env")
        p.add_argument("--database-url", dest="database_url", default=argparse.SUPPRESS)
        p.set_defaults(func=cmd_set_password)

    company = sub.add_parser("company", help="manage company files").add_subparsers(
        dest="action", required=True
    )
    company_add_args(company.add_parser("add", help="register a company file and its Web Connector user"))
    set_password_args(company.add_parser("set-password", help="change a company's Web Connector password"))
    lst = company.add_parser("list", help="list companies")
    lst.add_argument("--database-url", dest="database_url", default=argparse.SUPPRESS)
    lst.set_defaults(func=cmd_company_list)
    company_add_args(sub.add_parser("add-company", help="alias of `company add`"))
    set_password_args(sub.add_parser("set-password", help="alias of `company set-password`"))

    qwc = sub.add_parser("qwc", help="print a company's .qwc file")
    qwc.add_argument("name")
    qwc.add_argument("--database-url", dest="database_url", default=argparse.SUPPRESS)
    qwc.set_defaults(func=cmd_qwc)

    prune = sub.add_parser("prune", help="remove the qbXML (customer data) of jobs finished long ago")
    prune.add_argument(
        "--older-than",
        type=float,
        default=None,
        metavar="DAYS",
        help="jobs finished more than DAYS ago (default: QBWC_BRIDGE_PAYLOAD_RETENTION_DAYS, 30)",
    )
    prune.add_argument("--database-url", dest="database_url", default=argparse.SUPPRESS)
    prune.set_defaults(func=cmd_prune)

    token = sub.add_parser("token", help="jobs-API tokens").add_subparsers(dest="action", required=True)
    create = token.add_parser("create", help="create a token and print it (shown once)")
    create.add_argument(
        "--name", default="default", help="unique among active tokens; named in the audit log"
    )
    create.add_argument(
        "--company", action="append", help="a company the token may touch (repeat); default: every company"
    )
    create.add_argument("--rights", default="read,write", help="comma-separated: read, write, delete, admin")
    create.add_argument("--expires-in", help="e.g. 30d, 12h, 90m, 3600 (seconds); default: never")
    create.add_argument("--database-url", dest="database_url", default=argparse.SUPPRESS)
    create.set_defaults(func=cmd_token_create)
    lst_tokens = token.add_parser("list", help="list tokens (never their secrets)")
    lst_tokens.add_argument("--database-url", dest="database_url", default=argparse.SUPPRESS)
    lst_tokens.set_defaults(func=cmd_token_list)
    revoke = token.add_parser("revoke", help="revoke a token by name or id")
    revoke.add_argument("ref", metavar="NAME|ID")
    revoke.add_argument("--database-url", dest="database_url", default=argparse.SUPPRESS)
    revoke.set_defaults(func=cmd_token_revoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.func is not cmd_migrate and not (args.func is cmd_serve and args.migrate):
            _check_schema(args)
        return args.func(args)
    except ConfigError as exc:
        print(f"qbwc-bridge: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
