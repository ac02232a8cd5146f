"""`qbwc-bridge`: run the bridge and manage its companies and tokens.

    qbwc-bridge serve [--host H] [--port P] [--database-url URL] [--migrate] [--ssl-certfile F --ssl-keyfile F]
    qbwc-bridge migrate [--database-url URL]
    qbwc-bridge company add NAME [--user U] [--company-file PATH] [--every MINUTES] [--password-env VAR]
    qbwc-bridge company set-password NAME [--password-env VAR]
    qbwc-bridge company list
    qbwc-bridge qwc NAME                      print the .qwc file
    qbwc-bridge token create [--name N]       print a new jobs-API token (shown once)

Every option also comes from the environment (QBWC_BRIDGE_DATABASE_URL, QBWC_BRIDGE_HOST, ...).
Passwords are read from stdin or from the environment variable named by --password-env, never from
the command line (where `ps` and shell history would keep them). `add-company`/`set-password` are
accepted as aliases of the `company` subcommands.
"""

from __future__ import annotations

import argparse
import getpass
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


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from erpsync.qbwc_bridge.app import create_app
    from erpsync.qbwc_bridge.db import migrate

    settings = _settings(args)
    if args.migrate:
        migrate(settings.database_url)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise ConfigError("--ssl-certfile and --ssl-keyfile go together", where="serve")
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


def cmd_token_create(args: argparse.Namespace) -> int:
    from erpsync.qbwc_bridge.crud import create_token

    with _store(args).session() as s:
        print(create_token(session=s, name=args.name))
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

    token = sub.add_parser("token", help="jobs-API tokens").add_subparsers(dest="action", required=True)
    create = token.add_parser("create", help="create a token and print it (shown once)")
    create.add_argument("--name", default="default")
    create.add_argument("--database-url", dest="database_url", default=argparse.SUPPRESS)
    create.set_defaults(func=cmd_token_create)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"qbwc-bridge: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
