"""A request body size limit in front of every route (ASGI middleware): a body is refused with 413 as soon as it is
known to be too large (its Content-Length, or the bytes received so far), before it is parsed or held whole.

The field limits of ``serving.api_models`` bound what a parsed request may hold; this bounds what the server reads
to find out. The default (4 MiB) is well above the largest valid request (512 candidates with their features).
"""

from __future__ import annotations

import json
import os
from typing import Any, Awaitable, Callable

DEFAULT_MAX_BODY_BYTES = 4 * 2**20
MIN_BODY_BYTES = 1024

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def max_body_bytes() -> int:
    """``IAT_MAX_BODY_BYTES`` (bytes), or the default; a clear error for a value that is not a sane size."""
    raw = os.environ.get("IAT_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES))
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"IAT_MAX_BODY_BYTES: expected a whole number of bytes, got {raw!r}") from None
    if value < MIN_BODY_BYTES:
        raise ValueError(f"IAT_MAX_BODY_BYTES: {value} bytes is below the {MIN_BODY_BYTES} a rank request of one candidate needs")
    return value


class BodySizeLimit:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:  # the HTTP server has checked it is a number
            size = int(declared)
            if size > self.max_bytes:
                await self._answer(send, 413, f"request body of {size:,} bytes exceeds the limit of {self.max_bytes:,} bytes")
                return
            await self.app(scope, receive, send)
            return
        # No declared size (a chunked body): read it here, up to the limit, then hand the app what was read.
        body: list[bytes] = []
        received, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            body.append(message.get("body", b""))
            received += len(body[-1])
            if received > self.max_bytes:
                await self._answer(send, 413, f"request body exceeds the limit of {self.max_bytes:,} bytes")
                return
            more = message.get("more_body", False)
        replay: list[Message] = [{"type": "http.request", "body": b"".join(body), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    @staticmethod
    async def _answer(send: Send, status: int, msg: str) -> None:
        """The service's error shape: a message and a list of {loc, msg}."""
        msg = f"{msg} (IAT_MAX_BODY_BYTES)"
        body = json.dumps({"error": msg, "detail": [{"loc": ["body"], "msg": msg}]}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
