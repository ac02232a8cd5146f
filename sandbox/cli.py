"""`sandbox up`: start every simulator on its own port and write a state file for clients.

    sandbox up --state-file .demo/sandbox.json --data-dir .demo/sandbox

The state file (JSON) holds each system's base URL, the CA bundle path and the seeded credentials,
so tests, the demo and users can point Airflow connections at the sandbox.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from pathlib import Path

from erpsync.sandbox.runner import SandboxCA, SandboxContext, serve_in_thread, write_state_file

#: Simulator modules (each exposes `service(ctx) -> ServiceSpec`) and their default ports.
SIMULATORS: dict[str, int] = {
    "salesforce": 8501,
    "exact": 8502,
    "quickbooks": 8503,
    "autotask": 8504,
}


def _available(names: list[str]) -> list[str]:
    found = []
    for name in names:
        try:
            module = importlib.import_module(f"erpsync.sandbox.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(f"erpsync.sandbox.{name}"):
                continue
            raise
        if hasattr(module, "service"):
            found.append(name)
    return found


def cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    ctx = SandboxContext(
        data_dir=data_dir, ca=SandboxCA(data_dir / "ca"), seed=not args.no_seed, host=args.host
    )
    names = _available(args.only or list(SIMULATORS))
    if not names:
        print("sandbox: no simulator is available", file=sys.stderr)
        return 2
    running = []
    for name in names:
        module = importlib.import_module(f"erpsync.sandbox.{name}")
        spec = module.service(ctx)
        port = 0 if args.random_ports else SIMULATORS[name]
        running.append(serve_in_thread(spec, ctx, port=port))
    state = write_state_file(Path(args.state_file), running, ctx.ca)
    for name, facts in state["systems"].items():
        print(f"sandbox: {name} at {facts['url']}", flush=True)
    print(f"sandbox: state file {Path(args.state_file).resolve()}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    for service in reversed(running):
        service.stop()
    return 0


def cmd_webconnector(args: argparse.Namespace) -> int:
    """Play the Windows Web Connector's Auto-Run: one update every `--every` seconds until stopped."""
    import os

    from erpsync.sandbox.quickbooks import CompanyFile
    from erpsync.sandbox.webconnector import WebConnectorSimulator

    password = os.environ.get(args.password_env, "")
    if not password:
        print(f"sandbox webconnector: environment variable {args.password_env} is empty", file=sys.stderr)
        return 2
    try:
        company = CompanyFile(
            Path(args.company_file),
            recovery_history=args.recovery_history,
            recovery_shape=args.recovery_shape,
            max_version=args.max_qbxml_version,
        )
    except ValueError as exc:
        print(f"sandbox webconnector: {exc}", file=sys.stderr)
        return 2
    client = WebConnectorSimulator(
        args.url, args.user, password, company, company_file=args.company_file, noop_wait=1.0
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def show(report) -> None:
        if report.exchanges or report.status not in {"ok", "none"}:  # quiet when there was nothing to do
            detail = f": {report.last_error}" if report.last_error else ""
            print(f"sandbox webconnector: {report.status}, {report.exchanges} exchanges{detail}", flush=True)

    if args.once:
        report = client.run_once()
        show(report)
        return 0 if report.status in {"ok", "none"} else 1
    print(f"sandbox webconnector: polling {args.url} as {args.user} every {args.every}s", flush=True)
    client.run_every(args.every / 60, stop, on_report=show)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the simulators and write the state file")
    up.add_argument("--state-file", default=".demo/sandbox.json")
    up.add_argument(
        "--data-dir", default=".demo/sandbox", help="where simulators keep their data between runs"
    )
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--only", action="append", choices=list(SIMULATORS), help="start only these (repeatable)")
    up.add_argument("--random-ports", action="store_true", help="let the OS pick free ports")
    up.add_argument("--seed", dest="no_seed", action="store_false", help="seed realistic data (the default)")
    up.add_argument("--no-seed", dest="no_seed", action="store_true", help="start with empty systems")
    up.set_defaults(no_seed=False)  # seeded unless --no-seed (--seed's store_false would flip the default)
    wc = sub.add_parser("webconnector", help="run the simulated Web Connector against a bridge")
    wc.add_argument(
        "--url", required=True, help="the bridge's SOAP endpoint (AppURL), e.g. http://localhost:8503/qbwc"
    )
    wc.add_argument("--user", required=True, help="the company's Web Connector user")
    wc.add_argument("--password-env", required=True, help="environment variable holding the password")
    wc.add_argument("--company-file", required=True, help="the QuickBooks simulator's company file (SQLite)")
    wc.add_argument("--every", type=float, default=5.0, help="seconds between updates (QBWC's Auto-Run)")
    wc.add_argument("--once", action="store_true", help="run one update and exit (QBWC's Update Selected)")
    wc.add_argument(
        "--recovery-history", type=int, default=1, help="message sets QuickBooks remembers (QuickBooks: 1)"
    )
    wc.add_argument(
        "--recovery-shape",
        choices=["full", "error_recovery"],
        default="full",
        help="how QuickBooks answers oldMessageSetID: whole answers or ErrorRecovery aggregates",
    )
    wc.add_argument(
        "--max-qbxml-version",
        default=None,
        help="newest qbXML version QuickBooks speaks, e.g. 11.0 (default 16.0)",
    )
    args = parser.parse_args(argv)
    return {"up": cmd_up, "webconnector": cmd_webconnector}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
