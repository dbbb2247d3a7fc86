"""The controller's REST API. Domain errors map to HTTP status codes in one table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from stratafl.errors import (
    ConfigError,
    ModelFormatError,
    NotFoundError,
    RoundFailed,
    StrataError,
    UnavailableError,
    UpdateRejected,
)
from stratafl.modelfile import check_model_file
from stratafl.settings import SessionConfig
from stratafl.store.models import new_model_id

HTTP_STATUS: dict[type[StrataError], int] = {
    ConfigError: 422,
    ModelFormatError: 422,
    UpdateRejected: 422,
    NotFoundError: 404,
    UnavailableError: 503,
    RoundFailed: 409,
    StrataError: 400,
}
"""Every domain error's HTTP status; a test checks that each error class is listed."""


class AssignRequest(BaseModel):
    client_id: str
    failed_combiner: str | None = None


class AssignResponse(BaseModel):
    combiner_id: str
    address: str


def create_api(controller: Any) -> FastAPI:
    """The REST app over a running `Controller` (built explicitly, no globals)."""
    app = FastAPI(title="stratafl controller", version="0.1.0")

    @app.exception_handler(StrataError)
    async def _domain_error(_: Request, exc: StrataError) -> JSONResponse:
        status = next(code for cls, code in HTTP_STATUS.items() if isinstance(exc, cls))
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)

    @app.get("/api/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/discovery")
    async def discovery() -> dict[str, str]:
        return {"grpc_address": controller.grpc_address}

    @app.post("/api/v1/assign")
    async def assign(body: AssignRequest) -> AssignResponse:
        entry = controller.discovery.assign(body.client_id, body.failed_combiner)
        return AssignResponse(combiner_id=entry.combiner_id, address=entry.address)

    @app.get("/api/v1/combiners")
    async def combiners() -> list[dict[str, Any]]:
        return controller.store.combiners()  # type: ignore[no-any-return]

    @app.get("/api/v1/clients")
    async def clients() -> list[dict[str, Any]]:
        return controller.store.clients()  # type: ignore[no-any-return]

    @app.post("/api/v1/models", status_code=201)
    async def upload_model(request: Request) -> dict[str, Any]:
        """Upload a seed model as a safetensors file in the request body."""
        model_id = new_model_id()
        staged = Path(controller.workdir) / "staging" / f"upload-{model_id}.safetensors"
        staged.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(staged, "wb") as out:
                async for chunk in request.stream():
                    out.write(chunk)
            specs = check_model_file(staged)
            controller.models.put_file(model_id, staged)
        finally:
            staged.unlink(missing_ok=True)
        controller.store.add_model(
            model_id,
            parent_id=None,
            session_id=None,
            round_number=None,
            size_bytes=controller.models.size(model_id),
            num_parameters=sum(spec.size for spec in specs),
        )
        return controller.store.model(model_id)  # type: ignore[no-any-return]

    @app.get("/api/v1/models")
    async def models(session_id: str | None = None) -> list[dict[str, Any]]:
        return controller.store.models(session_id)  # type: ignore[no-any-return]

    @app.get("/api/v1/models/{model_id}")
    async def model(model_id: str) -> dict[str, Any]:
        return controller.store.model(model_id)  # type: ignore[no-any-return]

    @app.get("/api/v1/models/{model_id}/trail")
    async def trail(model_id: str) -> list[dict[str, Any]]:
        return controller.store.trail(model_id)  # type: ignore[no-any-return]

    @app.get("/api/v1/models/{model_id}/download")
    async def download(model_id: str) -> StreamingResponse:
        controller.store.model(model_id)
        path = controller.models.local_path(model_id)

        async def body() -> AsyncIterator[bytes]:
            with open(path, "rb") as stream:
                while chunk := stream.read(1 << 20):
                    yield chunk

        return StreamingResponse(body(), media_type="application/octet-stream")

    @app.post("/api/v1/sessions", status_code=201)
    async def start_session(config: SessionConfig) -> dict[str, Any]:
        if controller.sessions.busy():
            raise StrataError("a session is already running; wait for it or stop it first")
        session_id = controller.sessions.start(config)
        return controller.store.session(session_id)  # type: ignore[no-any-return]

    @app.get("/api/v1/sessions")
    async def sessions() -> list[dict[str, Any]]:
        return controller.store.sessions()  # type: ignore[no-any-return]

    @app.get("/api/v1/sessions/{session_id}")
    async def session(session_id: str) -> dict[str, Any]:
        return controller.store.session(session_id)  # type: ignore[no-any-return]

    @app.get("/api/v1/sessions/{session_id}/rounds")
    async def rounds(session_id: str) -> list[dict[str, Any]]:
        controller.store.session(session_id)
        return controller.store.rounds(session_id)  # type: ignore[no-any-return]

    @app.get("/api/v1/events")
    async def events(limit: int = 200) -> list[dict[str, Any]]:
        return controller.store.events(limit)  # type: ignore[no-any-return]

    return app
