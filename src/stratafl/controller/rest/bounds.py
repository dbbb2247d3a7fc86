"""Bounds on what a peer sends to the REST API: body sizes and list lengths.

Request bodies are counted as they arrive, before any of them is parsed or stored, so a
hostile or careless peer costs the controller at most the limit: a model upload at most
``max_upload_bytes`` (`MAX_UPLOAD_BYTES` unless the app is built with less), any other
body at most `MAX_JSON_BYTES`. A declared ``Content-Length`` over the limit is refused
before a byte is read; a body without one is refused as soon as it passes the limit. Both
answer 413 with an `ErrorBody`.

Every list endpoint answers a page (`stratafl.records.Page`): at most ``limit`` records
(`Limit`, 1 to `MAX_LIMIT`) and the cursor of the next page, passed back as ``after``
(`After`), so no answer grows with the federation's history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Query
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratafl.controller.rest.errors import BodyTooLarge, error_response
from stratafl.store.pages import MAX_CURSOR_CHARS

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_JSON_BYTES",
    "After",
    "MAX_LIMIT",
    "MAX_UPLOAD_BYTES",
    "BoundedBodies",
    "Limit",
]

MAX_UPLOAD_BYTES = 8 * 2**30
"""The largest model file the controller takes (8 GiB); `create_api` may set less."""
MAX_JSON_BYTES = 1 << 20
"""Every other body is a small JSON document (a session config, a certificate request)."""
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description="at most this many records in the page")
]
"""The ``limit`` query parameter of every list endpoint."""
After = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_CHARS,
        description="the `next` cursor of the previous page; left out: the first page",
    ),
]
"""The ``after`` query parameter of every list endpoint: an opaque cursor."""


class BoundedBodies:
    """ASGI middleware refusing request bodies over their route's limit with a 413.

    ``limits`` maps ``(method, path)`` to a limit in bytes; every other request gets
    ``default``. Bodies are never buffered here: each chunk is counted and passed on.
    """

    def __init__(
        self, app: ASGIApp, *, limits: Mapping[tuple[str, str], int], default: int
    ) -> None:
        self._app = app
        self._limits = dict(limits)
        self._default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self._limits.get((scope["method"], scope["path"]), self._default)
        where = f"{scope['method']} {scope['path']}"
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            detail = BodyTooLarge(limit, f"the request body ({declared} bytes)", where).detail
            await error_response(413, "BodyTooLarge", detail)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, "the request body", where)
            return message

        await self._app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body length, if any (a malformed one is ignored: counting still holds)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value) if len(value) <= 20 else 2**64  # int() refuses 4300+ digits
    return None
