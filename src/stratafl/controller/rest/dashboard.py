"""The dashboard's routes: the page at ``/`` and its scripts and style sheet.

The files and their headers come from `stratafl.dashboard` (one table); this module
turns the table into three public operations, read once per app and kept in memory
(about 5 MB, nearly all plotly.js). Files over `GZIP_OVER_BYTES` are also kept gzipped
and sent so to a browser that accepts it: plotly.js shrinks from 4.8 MB to about 1.4 MB
for an admin on a slow link.
"""

from __future__ import annotations

import asyncio
import gzip

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from stratafl.controller.rest.errors import errors_of
from stratafl.dashboard import PAGE_PATH, SCRIPT_PATH, STYLE_PATH, StaticFile, static_files
from stratafl.errors import NotFoundError

__all__ = ["dashboard_router"]

GZIP_OVER_BYTES = 64 * 1024


class _Served:
    """One file's bytes, read and compressed on first use (off the event loop)."""

    def __init__(self, file: StaticFile) -> None:
        self.file = file
        self._bodies: tuple[bytes, bytes | None] | None = None

    async def response(self, request: Request) -> Response:
        plain, zipped = await self._load()
        headers = {**self.file.headers(), "Vary": "Accept-Encoding"}
        if zipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(zipped, media_type=self.file.media_type, headers=headers)
        return Response(plain, media_type=self.file.media_type, headers=headers)

    async def _load(self) -> tuple[bytes, bytes | None]:
        if self._bodies is None:  # two first requests may both read: the same bytes
            self._bodies = await asyncio.to_thread(self._read)
        return self._bodies

    def _read(self) -> tuple[bytes, bytes | None]:
        plain = self.file.source.read_bytes()
        zipped = gzip.compress(plain, mtime=0) if len(plain) > GZIP_OVER_BYTES else None
        return plain, zipped


def _text(media_type: str, description: str) -> dict[int | str, dict[str, object]]:
    """The OpenAPI answer of a text file."""
    return {
        200: {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}
    }


def dashboard_router() -> APIRouter:
    """The public routes of the dashboard's files (see `stratafl.dashboard.routes`)."""
    served = {url: _Served(file) for url, file in static_files().items()}
    scripts = sorted(url for url in served if url not in (PAGE_PATH, STYLE_PATH))
    router = APIRouter(tags=["dashboard"])

    @router.get(
        PAGE_PATH,
        response_class=Response,
        responses=_text("text/html", "the dashboard page (it asks for the admin token)"),
    )
    async def page(request: Request) -> Response:
        """The live dashboard; its data comes from this API with the admin token."""
        return await served[PAGE_PATH].response(request)

    @router.get(
        SCRIPT_PATH,
        response_class=Response,
        responses={**_text("text/javascript", "one of the page's scripts"), **errors_of(404)},
    )
    async def script(request: Request, name: str = Path(max_length=64)) -> Response:
        """One of the dashboard's scripts (its own modules, and plotly.js)."""
        url = SCRIPT_PATH.replace("{name}", name)
        if url not in served:
            raise NotFoundError(
                f"the dashboard has no script {name}.js; its scripts are {', '.join(scripts)}"
            )
        return await served[url].response(request)

    @router.get(
        STYLE_PATH,
        response_class=Response,
        responses=_text("text/css", "the dashboard's style sheet"),
    )
    async def style(request: Request) -> Response:
        return await served[STYLE_PATH].response(request)

    return router
