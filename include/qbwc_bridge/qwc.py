"""The .qwc file a user double-clicks to add the bridge to the Web Connector, one per company file.

Rules from the Web Connector guide: AppURL must be https unless the host is localhost (QBWC1010) and a
host name rather than an IP address (QBWC1001); AppSupport must be on the same domain (QBWC1000) and
answer 200 (the public /support page does); OwnerID/FileID stay stable per company (a new FileID makes QBWC ask
to replace or add a second application).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from erpsync.errors import ConfigError
from erpsync.qbwc_bridge.models import Company

__all__ = ["check_app_url", "render_qwc"]


def check_app_url(url: str) -> None:
    """Refuse URLs the Web Connector would refuse, saying which rule they break."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if is_ip:
        raise ConfigError(
            f"AppURL {url} uses an IP address; the Web Connector refuses that (QBWC1001): use a host name",
            where="QBWC_BRIDGE_PUBLIC_URL",
        )
    if parts.scheme != "https" and host != "localhost":
        raise ConfigError(
            f"AppURL {url} is not https; the Web Connector only allows http for localhost (QBWC1010)",
            where="QBWC_BRIDGE_PUBLIC_URL",
        )


def render_qwc(company: Company, *, public_url: str, app_name: str) -> str:
    base = public_url.rstrip("/")
    app_url = f"{base}/qbwc"
    check_app_url(app_url)
    fields = [
        ("AppName", f"{app_name} ({company.name})"),
        ("AppID", ""),
        ("AppURL", app_url),
        ("AppDescription", (company.description or f"{app_name} sync for {company.name}")[:80]),
        ("AppSupport", f"{base}/support"),  # public and names nothing; /status needs a token
        ("UserName", company.username),
        ("OwnerID", company.owner_id),
        ("FileID", company.file_id),
        ("QBType", "QBFS"),
    ]
    body = "".join(f"  <{k}>{escape(v)}</{k}>\n" for k, v in fields)
    body += f"  <Scheduler>\n    <RunEveryNMinutes>{int(company.run_every_minutes)}</RunEveryNMinutes>\n  </Scheduler>\n"
    body += "  <IsReadOnly>false</IsReadOnly>\n  <PersonalDataPref>pdpNotNeeded</PersonalDataPref>\n"
    body += "  <UnattendedModePref>umpOptional</UnattendedModePref>\n  <Style>Document</Style>\n"
    return f'<?xml version="1.0"?>\n<QBWCXML>\n{body}</QBWCXML>\n'
