"""One error format for the REST API, mapped in one place.

Every failure answers with an `ErrorBody` (``{"error": ..., "detail": ...}``, a one-line
detail naming the fix), whichever layer raised it; `install_error_handlers` maps them:

    StrataError             -> HTTP_STATUS[class]  error = the class name
                               (401 adds ``WWW-Authenticate: Bearer``)
    RequestValidationError  -> 422                 error = "ValidationError"
    BodyTooLarge            -> 413                 error = "BodyTooLarge"
    HTTPException           -> its status          error = "HTTPError" (unknown path/method)
    anything else           -> 500                 error = "InternalError" (traceback logged)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratafl.errors import (
    AuthError,
    ConfigError,
    Conflict,
    ModelFormatError,
    NotFoundError,
    PermissionDenied,
    RateLimited,
    RoundFailed,
    StrataError,
    UnavailableError,
    UpdateRejected,
)
from stratafl.restapi.schema import ErrorBody

__all__ = [
    "HTTP_STATUS",
    "BodyTooLarge",
    "binary",
    "error_response",
    "errors_of",
    "install_error_handlers",
]

log = logging.getLogger("stratafl.controller.rest.app")

HTTP_STATUS: dict[type[StrataError], int] = {
    ConfigError: 422,
    ModelFormatError: 422,
    UpdateRejected: 422,
    NotFoundError: 404,
    UnavailableError: 503,
    RoundFailed: 409,
    Conflict: 409,
    RateLimited: 429,
    AuthError: 401,
    PermissionDenied: 403,
    StrataError: 400,
}
"""Every domain error's HTTP status; a test checks that each error class is listed."""

ERROR_TEXT = {
    400: "The request cannot be served in the federation's current state",
    401: "No valid token: send `Authorization: Bearer <token>`",
    403: "The token's role (or identity) may not do this",
    404: "No such model, session or token",
    409: "The federation's state does not allow this now",
    413: "The request body is over the controller's limit",
    429: "Too many requests from this caller: wait Retry-After seconds",
    422: "The request or the uploaded model is malformed",
    500: "An unexpected error; the controller's log has the traceback",
    503: "No combiner can take the client",
}

BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="stratafl"'}
"""What a 401 carries (RFC 6750): the scheme to authenticate with."""


def errors_of(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries declaring that an operation may answer these codes with ErrorBody."""
    return {code: {"model": ErrorBody, "description": ERROR_TEXT[code]} for code in codes}


def binary(description: str) -> dict[str, Any]:
    """An OpenAPI body (request or response) of raw bytes."""
    return {
        "description": description,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }


class BodyTooLarge(HTTPException):
    """A request body over its limit. An `HTTPException`, because FastAPI re-raises those
    untouched from its body reader (anything else there becomes a vague 400)."""

    def __init__(self, limit: int, what: str, where: str) -> None:
        super().__init__(
            413, f"{what} is over the limit of {limit} bytes for {where}; send a smaller one"
        )


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure of ``app`` with an `ErrorBody` (see the module docstring)."""

    @app.exception_handler(StrataError)
    async def _domain(_: Request, exc: StrataError) -> JSONResponse:
        status = next(code for cls, code in HTTP_STATUS.items() if isinstance(exc, cls))
        headers = BEARER_CHALLENGE if status == 401 else None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        return error_response(status, type(exc).__name__, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        ]
        detail = "; ".join(problems) or "the request is invalid"
        return error_response(422, "ValidationError", detail)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return error_response(413, "BodyTooLarge", exc.detail)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        detail = f"{exc.detail}: {request.method} {request.url.path}"
        if exc.status_code in (404, 405):  # no such operation
            detail += "; the operations are listed at /openapi.json"
        return error_response(exc.status_code, "HTTPError", detail, headers=exc.headers)

    app.add_middleware(_InternalErrors)


def error_response(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An `ErrorBody` answer; the detail is folded onto one line."""
    body = ErrorBody(error=error, detail=" ".join(detail.split()))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class _InternalErrors:
    """Answer an unexpected exception with a 500 `ErrorBody` and log its traceback.

    A pure ASGI middleware rather than an ``Exception`` handler: Starlette re-raises after
    calling such a handler, so the server would log the traceback twice and in-process
    test clients would see the exception instead of the answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, tracked)
        except Exception as exc:
            if started:  # the status line is out; only the server can close the connection
                raise
            where = f"{scope['method']} {scope['path']}"
            log.exception("unexpected error on %s", where)
            detail = f"unexpected {type(exc).__name__} on {where}; see the controller's log"
            await error_response(500, "InternalError", detail)(scope, receive, send)
