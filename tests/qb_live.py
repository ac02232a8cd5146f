"""A live QuickBooks stack for tests: the bridge over real HTTP, a company file, a polling Web Connector.

`live_quickbooks(folder)` starts the bridge (SQLite in `folder`), registers company ``acme``, opens the
company-file simulator and runs the Web Connector simulator every `every` seconds on a thread, the way
QBWC's Auto-Run does in production (every few minutes there). `before_document` hooks run inside the
Web Connector's QuickBooks call, before QuickBooks processes a document: tests use them to act as a
QuickBooks user editing a record between two of our exchanges.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN = secrets.token_urlsafe(32)  # a real-looking secret: weak static tokens are refused
COMPANY = "acme"


@dataclass
class LiveQuickBooks:
    bridge: Any
    qb: Any
    wc: Any
    before_document: list[Callable[[str], None]] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)

    def process(self, xml: str, *, session: str = "default") -> str:
        """What the Web Connector calls: run the hooks, then QuickBooks itself."""
        for hook in list(self.before_document):
            hook(xml)
        self.documents.append(xml)
        return self.qb.process(xml, session=session)

    def end_session(self, session: str = "default") -> None:
        self.qb.end_session(session)

    def connection(self, conn_id: str = "qbwc_bridge_default") -> dict[str, Any]:
        host, port = self.bridge.url.split("//", 1)[1].rsplit(":", 1)
        return {
            "conn_id": conn_id,
            "conn_type": "qbwc_bridge",
            "host": host,
            "port": int(port),
            "schema": "http",
            "password": TOKEN,
            "extra": {"company": COMPANY, "timeout": 30},
        }

    def connection_json(self) -> str:
        conn = self.connection()
        conn.pop("conn_id")
        return json.dumps(conn)

    def customers(self) -> list[dict[str, Any]]:
        return self.qb.records("Customer")

    def data_ext(self, name: str, list_id: str) -> str | None:
        return self.qb.data_ext("0", name, list_id)

    def customer_adds(self) -> int:
        return sum(doc.count("<CustomerAddRq") for doc in self.documents)

    def customer_mods(self) -> int:
        return sum(doc.count("<CustomerModRq") for doc in self.documents)


@contextmanager
def live_quickbooks(folder: Path, *, every: float = 0.1, **settings: Any) -> Iterator[LiveQuickBooks]:
    from erpsync.sandbox.quickbooks import CompanyFile
    from erpsync.sandbox.runner import SandboxCA, SandboxContext
    from erpsync.sandbox.webconnector import WebConnectorSimulator, start_bridge

    folder.mkdir(parents=True, exist_ok=True)
    ctx = SandboxContext(data_dir=folder, ca=SandboxCA(folder / "ca"))
    bridge = start_bridge(ctx, companies={COMPANY: "pw"}, api_token=TOKEN, **settings)
    qb = CompanyFile(folder / "acme.qbw")
    live = LiveQuickBooks(bridge, qb, None)
    live.wc = WebConnectorSimulator(bridge.soap_url, COMPANY, "pw", live, noop_wait=0.02, send_hcp=False)
    stop = threading.Event()
    thread = threading.Thread(target=live.wc.run_every, args=(every / 60, stop), daemon=True)
    thread.start()
    try:
        yield live
    finally:
        stop.set()
        thread.join(timeout=30)
        bridge.stop()
        qb.close()
