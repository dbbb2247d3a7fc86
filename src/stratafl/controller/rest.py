"""The controller's REST API: typed records in, typed records out, one error format.

Every operation declares its response model, so ``/openapi.json`` describes every answer
and `stratafl.api.client` parses each one into the same record. Every failure answers with
an `ErrorBody` (``{"error": ..., "detail": ...}``, a one-line detail naming the fix),
whichever layer raised it; `install_error_handlers` maps them in one place:

    StrataError             -> HTTP_STATUS[class]  error = the class name
    RequestValidationError  -> 422                 error = "ValidationError"
    HTTPException           -> its status          error = "HTTPError" (unknown path/method)
    anything else           -> 500                 error = "InternalError" (traceback logged)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratafl.api.schema import Assignment, AssignRequest, DiscoveryInfo, ErrorBody, Health
from stratafl.errors import (
    AuthError,
    ConfigError,
    ModelFormatError,
    NotFoundError,
    PermissionDenied,
    RoundFailed,
    StrataError,
    UnavailableError,
    UpdateRejected,
)
from stratafl.modelfile import check_model_file
from stratafl.records import (
    ClientRecord,
    CombinerRecord,
    EventRecord,
    ModelRecord,
    RoundRecord,
    SessionRecord,
)
from stratafl.settings import SessionConfig

if TYPE_CHECKING:
    from stratafl.controller.wiring import Controller

__all__ = ["HTTP_STATUS", "create_api", "install_error_handlers"]

log = logging.getLogger("stratafl.controller.rest")

HTTP_STATUS: dict[type[StrataError], int] = {
    ConfigError: 422,
    ModelFormatError: 422,
    UpdateRejected: 422,
    NotFoundError: 404,
    UnavailableError: 503,
    RoundFailed: 409,
    AuthError: 401,
    PermissionDenied: 403,
    StrataError: 400,
}
"""Every domain error's HTTP status; a test checks that each error class is listed."""

_ERROR_TEXT = {
    400: "The request cannot be served in the federation's current state",
    404: "No such model or session",
    409: "A round failed",
    422: "The request or the uploaded model is malformed",
    500: "An unexpected error; the controller's log has the traceback",
    503: "No combiner can take the client",
}

UPLOAD_BUFFER_BYTES = 1 << 20
"""Upload chunks are gathered up to this size before each write, to bound thread hops."""


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries declaring that an operation may answer these codes with ErrorBody."""
    return {code: {"model": ErrorBody, "description": _ERROR_TEXT[code]} for code in codes}


def _binary(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }


def create_api(controller: Controller) -> FastAPI:
    """The REST app over a `Controller` (built explicitly, no globals; starts nothing)."""
    app = FastAPI(title="stratafl controller", version="0.1.0", responses=_errors(422, 500))
    install_error_handlers(app)
    store = controller.store

    @app.get("/api/v1/health")
    async def health() -> Health:
        return Health()

    @app.get("/api/v1/discovery")
    async def discovery() -> DiscoveryInfo:
        return DiscoveryInfo(grpc_address=controller.grpc_address)

    @app.post("/api/v1/assign", responses=_errors(503))
    async def assign(body: AssignRequest) -> Assignment:
        entry = controller.discovery.assign(body.client_id, body.failed_combiner)
        return Assignment(combiner_id=entry.combiner_id, address=entry.address)

    @app.get("/api/v1/combiners")
    async def combiners() -> list[CombinerRecord]:
        return store.combiners()

    @app.get("/api/v1/clients")
    async def clients() -> list[ClientRecord]:
        return store.clients()

    @app.post(
        "/api/v1/models",
        status_code=201,
        openapi_extra={"requestBody": {"required": True, **_binary("a safetensors file")}},
    )
    async def upload_model(request: Request) -> ModelRecord:
        """Upload a seed model as a safetensors file in the request body."""
        name = f"upload-{uuid.uuid4().hex}"
        staged = await asyncio.to_thread(controller.trail.staging_path, name)
        try:
            await _stream_to_file(request, staged)
            specs = await asyncio.to_thread(check_model_file, staged)
            parameters = sum(spec.size for spec in specs)
            return await asyncio.to_thread(
                controller.trail.publish_file, staged, parameters=parameters
            )
        finally:  # publish_file consumes the file; a refused upload leaves nothing behind
            await asyncio.to_thread(staged.unlink, missing_ok=True)

    @app.get("/api/v1/models")
    async def models(session_id: str | None = None) -> list[ModelRecord]:
        return store.models(session_id)

    @app.get("/api/v1/models/{model_id}", responses=_errors(404))
    async def model(model_id: str) -> ModelRecord:
        return store.model(model_id)

    @app.get("/api/v1/models/{model_id}/trail", responses=_errors(404))
    async def trail(model_id: str) -> list[ModelRecord]:
        return store.trail(model_id)

    @app.get(
        "/api/v1/models/{model_id}/download",
        response_class=Response,  # no JSON default: the 200 below is the only body
        responses={200: _binary("the model as a safetensors file"), **_errors(404)},
    )
    async def download(model_id: str) -> Response:
        store.model(model_id)
        path = await asyncio.to_thread(controller.models.local_path, model_id)
        return FileResponse(path, media_type="application/octet-stream")

    @app.post("/api/v1/sessions", status_code=201, responses=_errors(400, 404))
    async def start_session(config: SessionConfig) -> SessionRecord:
        if controller.sessions.busy():
            raise StrataError("a session is already running; wait for it to finish first")
        return store.session(controller.sessions.start(config))

    @app.get("/api/v1/sessions")
    async def sessions() -> list[SessionRecord]:
        return store.sessions()

    @app.get("/api/v1/sessions/{session_id}", responses=_errors(404))
    async def session(session_id: str) -> SessionRecord:
        return store.session(session_id)

    @app.get("/api/v1/sessions/{session_id}/rounds", responses=_errors(404))
    async def rounds(session_id: str) -> list[RoundRecord]:
        store.session(session_id)  # an unknown session is a 404, not an empty list
        return store.rounds(session_id)

    @app.get("/api/v1/events")
    async def events(
        limit: int = Query(200, ge=1, le=1000, description="how many of the newest events"),
    ) -> list[EventRecord]:
        return store.events(limit)

    return app


async def _stream_to_file(request: Request, path: Path) -> None:
    """Write the request body to ``path`` with every file operation off the event loop."""
    out = await asyncio.to_thread(path.open, "wb")
    try:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) >= UPLOAD_BUFFER_BYTES:
                await asyncio.to_thread(out.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(out.write, bytes(buffer))
    finally:
        await asyncio.to_thread(out.close)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure of ``app`` with an `ErrorBody` (see the module docstring)."""

    @app.exception_handler(StrataError)
    async def _domain(_: Request, exc: StrataError) -> JSONResponse:
        status = next(code for cls, code in HTTP_STATUS.items() if isinstance(exc, cls))
        return _error(status, type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        ]
        return _error(422, "ValidationError", "; ".join(problems) or "the request is invalid")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        detail = (
            f"{exc.detail}: {request.method} {request.url.path}; "
            "the operations are listed at /docs and /openapi.json"
        )
        return _error(exc.status_code, "HTTPError", detail, headers=exc.headers)

    app.add_middleware(_InternalErrors)


def _error(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=error, detail=" ".join(detail.split()))  # one line
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
            await _error(500, "InternalError", detail)(scope, receive, send)
