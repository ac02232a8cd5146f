"""Wire helpers shared by the simulator's endpoints: error bodies, per-session state, faulty responses."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.responses import JSONResponse, Response

from .org import SaveError

__all__ = [
    "BadJson",
    "Cursor",
    "DroppedResponse",
    "Session",
    "lock_error",
    "lock_save_error",
    "method_not_allowed",
    "rest_error",
]


@dataclass
class Session:
    user_id: str
    last_used: float
    issued: float


@dataclass
class Cursor:
    """An open query locator: the matched ids, what to render of each, and when it was last read."""

    ids: list[str]
    paths: list[tuple[str, ...]]
    version: str
    last_used: float
    endpoint: str
    subqueries: list = field(default_factory=list)


class _Drop(Exception):
    """Raised after the response headers went out, so the server cuts the connection mid-response."""


def rest_error(
    status: int, code: str, message: str, fields: list[str] | None = None, headers: dict | None = None
) -> JSONResponse:
    body = [{"message": message, "errorCode": code, **({"fields": fields} if fields is not None else {})}]
    return JSONResponse(body, status_code=status, headers=headers)


class BadJson(Exception):
    pass


def lock_save_error() -> SaveError:
    return SaveError("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records")


def lock_error() -> JSONResponse:
    return JSONResponse([lock_save_error().rest()], status_code=400)


def method_not_allowed(method: str, allowed: str) -> JSONResponse:
    return rest_error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}")


class DroppedResponse(Response):
    """Send headers promising a body, then fail: uvicorn closes the socket mid-response."""

    def __init__(self):
        super().__init__(b"", status_code=200)

    async def __call__(self, scope, receive, send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"trunc', "more_body": True})
        raise _Drop("connection dropped by fault injection")
