"""REST endpoints of app packages: an admin publishes and lists them; a client fetches the
one the running session names.

A package is streamed to a staging file (its size bounded by `bounds.BoundedBodies` at
`MAX_APP_BYTES`), hashed as it arrives, and stored under its SHA-256 (`store.apps`). A
client may download only the running session's package: a package is code an
organisation ships to the sites of one session, not a catalogue for every enrolled client
(an admin may download any). Every file operation runs off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from stratafl.controller.rest.auth import Authorizer
from stratafl.controller.rest.bodies import pieces, stream_to_file
from stratafl.controller.rest.errors import binary, errors_of
from stratafl.errors import NotFoundError
from stratafl.records import AppRecord
from stratafl.security import Claims, Role
from stratafl.settings import APP_FILE_PATTERN

if TYPE_CHECKING:
    from stratafl.controller.wiring import Controller

__all__ = ["APPS_PATH", "MAX_APP_BYTES", "apps_router"]

APPS_PATH = "/api/v1/apps"
MAX_APP_BYTES = 64 << 20
"""The largest package the controller takes: an app's own code, not its dependencies
(each site installs those itself) nor its data."""


def apps_router(controller: Controller, authorize: Authorizer) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    caller_of = Depends(authorize.caller)

    @router.post(
        "/apps",
        status_code=201,
        responses=errors_of(400, 413),
        openapi_extra={"requestBody": {"required": True, **binary("a wheel or source archive")}},
    )
    async def publish_app(
        request: Request,
        filename: Annotated[str, Query(pattern=APP_FILE_PATTERN, max_length=210)],
    ) -> AppRecord:
        """Publish an app package (the file in the body, its name in ``filename``); the
        answer names its SHA-256, which a session's ``app_sha256`` takes."""
        staged = await asyncio.to_thread(controller.trail.staging_path, f"app-{uuid.uuid4().hex}")
        try:
            digest = hashlib.sha256()
            await stream_to_file(request, staged, digest)
            return await asyncio.to_thread(
                controller.apps.put_file, digest.hexdigest(), filename, staged
            )
        finally:
            await asyncio.to_thread(staged.unlink, missing_ok=True)

    @router.get("/apps")
    async def apps() -> list[AppRecord]:
        """Every package the controller holds."""
        return await asyncio.to_thread(controller.apps.records)

    @router.get(
        "/apps/{sha256}/download",
        response_class=Response,
        responses={200: binary("the package's bytes"), **errors_of(404)},
    )
    async def download_app(sha256: str, caller: Claims = caller_of) -> Response:
        """The package's bytes; a client gets only the running session's package."""
        if caller.role == Role.CLIENT and sha256 != controller.sessions.running_app():
            raise NotFoundError(  # a 404: a client learns nothing of other packages
                f"app package {sha256} is not the running session's app: a client may "
                "fetch only the package of the session it serves"
            )
        record = await asyncio.to_thread(controller.apps.record, sha256)
        stream = await asyncio.to_thread(controller.apps.open, sha256)
        return StreamingResponse(
            pieces(stream),
            media_type="application/octet-stream",
            headers={
                "content-length": str(record.size_bytes),
                "content-disposition": f'attachment; filename="{record.filename}"',
            },
        )

    return router
