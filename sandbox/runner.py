"""Run simulator ASGI apps on real sockets: one thread per app, TLS where the real system insists.

Every simulator module `erpsync.sandbox.<name>` exposes `service(ctx: SandboxContext) -> ServiceSpec`.
`sandbox up` (cli.py) starts all of them and writes the state file; tests start the one they need
with `serve_in_thread` so hooks talk to it over HTTP(S) exactly as they would to the real system.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RunningService",
    "SandboxCA",
    "SandboxContext",
    "ServiceSpec",
    "serve_in_thread",
    "write_state_file",
]


@dataclass
class SandboxCA:
    """A local certificate authority, kept in `folder` so a restarted sandbox keeps the same trust root.

    Clients are told to trust `ca_bundle` (a PEM file) through their connection; verification is never
    turned off.
    """

    folder: Path

    @property
    def ca_bundle(self) -> Path:
        return self.folder / "ca.pem"

    def server_files(self, hostnames: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
        """Return (certificate chain, key) PEM files for a server certificate valid for `hostnames`."""
        import trustme

        self.folder.mkdir(parents=True, exist_ok=True)
        ca_key = self.folder / "ca.key"
        if ca_key.exists() and self.ca_bundle.exists():
            ca = _load_ca(self.ca_bundle, ca_key)
        else:
            ca = trustme.CA(organization_name="erpsync sandbox")
            ca.cert_pem.write_to_path(str(self.ca_bundle))
            ca.private_key_pem.write_to_path(str(ca_key))
            ca_key.chmod(0o600)
        cert = ca.issue_cert(*hostnames)
        chain, key = self.folder / "server.pem", self.folder / "server.key"
        with chain.open("wb") as fh:
            for blob in cert.cert_chain_pems:
                fh.write(blob.bytes())
        cert.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        return chain, key


def _load_ca(cert_path: Path, key_path: Path):
    """Rebuild a trustme.CA from its saved PEM files (trustme has no loader of its own)."""
    import trustme
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    ca = trustme.CA.__new__(trustme.CA)
    ca.parent_cert = None
    ca._private_key = load_pem_private_key(key_path.read_bytes(), password=None)
    ca._certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca._path_length = 9
    return ca


@dataclass
class SandboxContext:
    """What a simulator gets when it is built: where to keep data, the CA, and whether to seed."""

    data_dir: Path
    ca: SandboxCA
    seed: bool = True
    host: str = "127.0.0.1"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ServiceSpec:
    """One simulator ready to serve: its ASGI app and what clients need to reach it."""

    name: str
    app: Callable
    tls: bool = False
    port: int = 0
    #: Extra facts for the state file (seeded credentials, ids); merged with url and ca_bundle.
    info: dict[str, Any] = field(default_factory=dict)
    #: Called once the service stops, to flush state to disk.
    on_stop: Callable[[], None] | None = None


@dataclass
class RunningService:
    spec: ServiceSpec
    url: str
    _server: Any
    _thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self.spec.on_stop:
            self.spec.on_stop()


def serve_in_thread(spec: ServiceSpec, ctx: SandboxContext, *, port: int | None = None) -> RunningService:
    """Start `spec.app` with uvicorn on a background thread and return once it accepts connections."""
    import uvicorn

    host = ctx.host
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on connections accepted from a socket
    # whose proto says TCP; without it every response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, spec.port if port is None else port))
    bound_port = sock.getsockname()[1]
    kwargs: dict[str, Any] = {}
    if spec.tls:
        chain, key = ctx.ca.server_files()
        kwargs.update(ssl_certfile=str(chain), ssl_keyfile=str(key))
    config = uvicorn.Config(
        spec.app,
        log_level="warning",
        lifespan="auto",
        access_log=False,
        # Don't wait on clients that keep idle keep-alive connections open when stopping.
        timeout_graceful_shutdown=2,
        **kwargs,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name=f"sandbox-{spec.name}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"sandbox service {spec.name} did not start on {host}:{bound_port}")
        time.sleep(0.02)
    scheme = "https" if spec.tls else "http"
    shown_host = "localhost" if spec.tls and host in {"127.0.0.1", "0.0.0.0"} else host
    return RunningService(spec, f"{scheme}://{shown_host}:{bound_port}", server, thread)


def tls_client_context(ca: SandboxCA) -> ssl.SSLContext:
    """An SSL context that trusts only the sandbox CA, for tests that open raw connections."""
    return ssl.create_default_context(cafile=str(ca.ca_bundle))


def write_state_file(path: Path, services: list[RunningService], ca: SandboxCA) -> dict:
    """Write the JSON state file: each system's base URL, the CA bundle and the seeded credentials."""
    state = {
        "ca_bundle": str(ca.ca_bundle),
        "systems": {s.spec.name: {"url": s.url, **s.spec.info} for s in services},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)
    return state
