"""The sandbox serves apps on real sockets, over TLS that clients verify against the sandbox CA."""

from __future__ import annotations

import ssl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from erpsync.sandbox.runner import SandboxCA, SandboxContext, ServiceSpec, serve_in_thread, write_state_file


def _app():
    return Starlette(routes=[Route("/ping", lambda request: JSONResponse({"pong": True}))])


def test_tls_service_trusted_only_through_sandbox_ca(tmp_path):
    ctx = SandboxContext(data_dir=tmp_path, ca=SandboxCA(tmp_path / "ca"))
    running = serve_in_thread(ServiceSpec("probe", _app(), tls=True, info={"user": "u"}), ctx)
    try:
        trusted = ssl.create_default_context(cafile=str(ctx.ca.ca_bundle))
        assert httpx.get(f"{running.url}/ping", verify=trusted).json() == {"pong": True}
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{running.url}/ping")  # the system trust store does not know the sandbox CA
        state = write_state_file(tmp_path / "state.json", [running], ctx.ca)
        assert state["systems"]["probe"] == {"url": running.url, "user": "u"}
        assert (tmp_path / "state.json").is_file()
    finally:
        running.stop()


def test_restart_keeps_the_same_ca(tmp_path):
    ctx = SandboxContext(data_dir=tmp_path, ca=SandboxCA(tmp_path / "ca"))
    first = serve_in_thread(ServiceSpec("probe", _app(), tls=True), ctx)
    first.stop()
    bundle = ctx.ca.ca_bundle.read_bytes()
    second = serve_in_thread(ServiceSpec("probe", _app(), tls=True), ctx)
    try:
        assert ctx.ca.ca_bundle.read_bytes() == bundle
        trusted = ssl.create_default_context(cafile=str(ctx.ca.ca_bundle))
        assert httpx.get(f"{second.url}/ping", verify=trusted).status_code == 200
    finally:
        second.stop()
