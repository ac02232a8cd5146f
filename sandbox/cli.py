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
    up.add_argument("--no-seed", action="store_true", help="start with empty systems")
    args = parser.parse_args(argv)
    return {"up": cmd_up}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
