"""A request-body size limit that answers 413 and never buffers or logs what it refuses.

Why not FastAPI's own ``max_body_size``: its limiter also counts the body chunks a *streaming* response
reads while it waits for the client to disconnect (``FileResponse`` for ``/`` and ``/static``), so a GET
that sends a large chunked body gets its answer cut off and an "Exception in ASGI application" logged.
Here the limit applies to the request only while no answer has started:

- a declared ``Content-Length`` over the limit: 413 at once, nothing read;
- a chunked body that grows past it while a route reads it: 413 (an ``HTTPException`` the route's body
  reading re-raises, so the app's handlers render it);
- once an answer has started (a route that reads no body), the rest of the body is dropped unread.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimitMiddleware", "BodyTooLarge"]


class BodyTooLarge(HTTPException):
    """The request body is larger than the gateway reads."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes (gateway_max_body_bytes)")


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:  # the server refuses a malformed one before the app sees it
                return None
    return None


class BodyLimitMiddleware:
    """Pure ASGI middleware: at most ``limit`` bytes of request body reach the app."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.limit:
            exc = BodyTooLarge(self.limit)
            await JSONResponse({"detail": exc.detail}, exc.status_code)(scope, receive, send)
            return
        received = 0
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def receive_limited() -> Message:
            nonlocal received
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return message
                received += len(message.get("body", b""))
                if received <= self.limit:
                    return message
                if not started:
                    raise BodyTooLarge(self.limit)
                if not message.get("more_body", False):  # answered already: the body ends, unread
                    return {"type": "http.request", "body": b"", "more_body": False}

        await self.app(scope, receive_limited, send_started)
