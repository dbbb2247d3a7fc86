"""REST endpoints of the model trail: upload a seed model, list, fetch, download.

An upload is streamed to a staging file (its size bounded by `bounds.BoundedBodies`
as it arrives), checked as a safetensors file (`modelfile.check_model_file`: header size,
shapes, offsets, length) and only then published; a refused upload leaves nothing behind.
A download streams from any model store (a folder, ``memory://``, S3) in 1 MiB pieces
(`CHUNK_BYTES`).
Every file operation and every read of the state store runs off the event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from stratafl.controller.rest.audit import record_action
from stratafl.controller.rest.auth import Authorizer
from stratafl.controller.rest.bodies import pieces, stream_to_file
from stratafl.controller.rest.bounds import DEFAULT_LIMIT, After, Limit
from stratafl.controller.rest.errors import binary, error_response, errors_of
from stratafl.errors import ModelFormatError
from stratafl.modelfile.codec import MappedModelFile, check_model_file
from stratafl.records import AuditAction, ModelRecord, Page
from stratafl.restapi.schema import ErrorBody
from stratafl.security import Claims
from stratafl.store.protocols import ModelReads, SessionReads

if TYPE_CHECKING:
    from stratafl.controller.wiring import Controller

__all__ = ["UPLOAD_PATH", "models_router"]

UPLOAD_PATH = "/api/v1/models"


def models_router(controller: Controller, authorize: Authorizer) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    store: ModelReads = controller.store
    sessions: SessionReads = controller.store
    caller_of = Depends(authorize.caller)

    @router.post(
        "/models",
        status_code=201,
        responses=errors_of(413),
        openapi_extra={"requestBody": {"required": True, **binary("a safetensors file")}},
    )
    async def upload_model(request: Request, caller: Claims = caller_of) -> ModelRecord:
        """Upload a seed model as a safetensors file in the request body."""
        name = f"upload-{uuid.uuid4().hex}"
        staged = await asyncio.to_thread(controller.trail.staging_path, name)
        try:
            await stream_to_file(request, staged)
            specs = await asyncio.to_thread(check_model_file, staged)
            await asyncio.to_thread(refuse_non_finite, staged)
            parameters = sum(spec.size for spec in specs)
            record = await asyncio.to_thread(
                controller.trail.publish_file, staged, parameters=parameters
            )
            await record_action(
                controller.store,
                AuditAction.MODEL_UPLOADED,
                caller,
                record.id,
                size_bytes=record.size_bytes,
                parameters=parameters,
            )
            return record
        finally:  # publish_file consumes the file; a refused upload leaves nothing behind
            await asyncio.to_thread(staged.unlink, missing_ok=True)

    @router.get("/models", responses=errors_of(400))
    async def models(
        session_id: str | None = None, after: After = None, limit: Limit = DEFAULT_LIMIT
    ) -> Page[ModelRecord]:
        """Models in the order they were stored, all of them or those one session made."""
        if session_id is not None:
            session_id = (await store.off_loop.read(sessions.session, session_id)).id
        return await store.off_loop.read(store.models_page, session_id, after, limit)

    @router.get("/models/{model_id}", responses=errors_of(404))
    async def model(model_id: str) -> ModelRecord:
        return await store.off_loop.read(store.model, model_id)

    @router.get("/models/{model_id}/trail", responses=errors_of(400, 404))
    async def trail(
        model_id: str, after: After = None, limit: Limit = DEFAULT_LIMIT
    ) -> Page[ModelRecord]:
        """The model and its ancestors, newest first: the seed model comes last."""
        model_id = (await store.off_loop.read(store.model, model_id)).id  # a prefix: its id
        return await store.off_loop.read(store.trail_page, model_id, after, limit)

    @router.get(
        "/models/{model_id}/download",
        response_class=Response,  # no JSON default: the 200 below is the only body
        responses={
            200: binary("the model as a safetensors file"),
            **errors_of(404),
            410: {"model": ErrorBody, "description": "The retention policy deleted its file"},
        },
    )
    async def download(model_id: str) -> Response:
        """The model's safetensors file, streamed from the model store (a folder, S3...)."""
        record = await store.off_loop.read(store.model, model_id)
        if record.pruned_at is not None:  # its row stays in the trail; its file is gone
            detail = f"model {record.id} was pruned: {controller.trail.retention.describe()}"
            return error_response(410, "Gone", detail)
        stream = await asyncio.to_thread(controller.models.open, record.id)
        return StreamingResponse(
            pieces(stream),
            media_type="application/octet-stream",
            headers={"content-length": str(record.size_bytes)},
        )

    return router


FINITE_CHECK_ELEMENTS = 1 << 20
"""Elements checked at once: a large model is scanned in slices, not copied whole."""


def refuse_non_finite(path: Path) -> None:
    """`ModelFormatError` if any value of the model file is NaN or infinite: such a seed
    would poison every round after it (and any mean it enters)."""
    model = MappedModelFile(path)
    for name in model:
        flat = model[name].reshape(-1)
        if not np.issubdtype(flat.dtype, np.floating):
            continue
        for start in range(0, flat.size, FINITE_CHECK_ELEMENTS):
            if not np.isfinite(flat[start : start + FINITE_CHECK_ELEMENTS]).all():
                raise ModelFormatError(
                    f"tensor {name!r} holds NaN or infinite values; a seed model must be "
                    "finite everywhere: upload a freshly initialised one (strata model seed)"
                )
