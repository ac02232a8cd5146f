"""`AirflowApi` against a real local HTTP server: idempotent calls ride out a server error (the
standalone's api-server on SQLite answers 500 "Database error" while the scheduler writes); a POST,
which might have been applied, is never sent twice."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from erpsync.localstack import AirflowApi


@pytest.fixture
def server():
    seen: list[tuple[str, str]] = []
    failures = {"left": 2}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            seen.append((self.command, self.path))
            if failures["left"] > 0:
                failures["left"] -= 1
                status, body = 500, {"detail": {"reason": "Database error"}}
            else:
                status, body = 200, {"ok": True, "name": self.path.rsplit("/", 1)[-1]}
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_PATCH = do_POST = _answer

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen, failures
    finally:
        httpd.shutdown()


def api(url: str) -> AirflowApi:
    return AirflowApi(url, _token="t", retry_pauses=(0.01, 0.01, 0.01))


def test_a_get_or_patch_is_retried_after_server_errors(server):
    url, seen, failures = server
    assert api(url)._request("PATCH", "/api/v2/pools/p", {"slots": 2}) == {"ok": True, "name": "p"}
    assert seen == [("PATCH", "/api/v2/pools/p")] * 3
    failures["left"] = 9  # more failures than retries: the last error is raised, with its detail
    with pytest.raises(RuntimeError, match=r"GET /api/v2/dags/d -> HTTP 500: .*Database error"):
        api(url)._request("GET", "/api/v2/dags/d")
    assert seen.count(("GET", "/api/v2/dags/d")) == 4


def test_a_post_is_never_sent_twice(server):
    url, seen, _ = server
    with pytest.raises(RuntimeError, match="HTTP 500"):
        api(url)._request("POST", "/api/v2/dags/d/dagRuns", {"conf": {}})
    assert seen == [("POST", "/api/v2/dags/d/dagRuns")]
