"""Airflow plugin: the erpsync pages in the Airflow UI (sync page per flow, quarantine with retry,
record activity log), served by the api-server under /erpsync.

The FastAPI app is built on its first request, not when the plugin loads: task processes and the
scheduler load plugins too and must not pay for FastAPI routes they never serve.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/erpsync"


class _LazyApp:
    """An ASGI app that builds `erpsync.ui.app.create_app()` on first use."""

    def __init__(self) -> None:
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            from erpsync.ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        return "erpsync.ui.app:create_app"


class ErpsyncUiPlugin(AirflowPlugin):
    name = "erpsync_ui"
    fastapi_apps = [{"app": _LazyApp(), "url_prefix": URL_PREFIX, "name": "erpsync pages"}]
    external_views = [
        {
            "name": "ERP sync",
            "href": f"{URL_PREFIX}/",
            "url_route": "erpsync",
            "destination": "nav",
            "category": "browse",
        },
        {
            "name": "Sync page",
            "href": f"{URL_PREFIX}/flows/{{DAG_ID}}",
            "url_route": "erpsync-flow",
            "destination": "dag",
        },
    ]
