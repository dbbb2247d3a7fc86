"""Request and response bodies that are files: streamed to disk on the way in, in 1 MiB
pieces on the way out, so no upload or download is held whole in the controller's memory.
Every file operation runs off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from fastapi import Request

from stratafl.transport.streams import CHUNK_BYTES

if TYPE_CHECKING:
    import hashlib

__all__ = ["UPLOAD_BUFFER_BYTES", "pieces", "stream_to_file"]

UPLOAD_BUFFER_BYTES = 1 << 20
"""Upload chunks are gathered up to this size before each write, to bound thread hops."""


def pieces(stream: BinaryIO) -> Iterator[bytes]:
    """The stream's bytes, 1 MiB at a time, so a file is never held whole; Starlette reads
    a plain iterator in a worker thread, off the event loop. Closes the stream at the end."""
    with stream:
        while piece := stream.read(CHUNK_BYTES):
            yield piece


async def stream_to_file(request: Request, path: Path, digest: hashlib._Hash | None = None) -> None:
    """Write the request body to ``path``, feeding ``digest`` with it if one is given."""
    out = await asyncio.to_thread(path.open, "wb")
    try:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) >= UPLOAD_BUFFER_BYTES:
                await _write(out, buffer, digest)
                buffer.clear()
        if buffer:
            await _write(out, buffer, digest)
    finally:
        await asyncio.to_thread(out.close)


async def _write(out: BinaryIO, buffer: bytearray, digest: hashlib._Hash | None) -> None:
    data = bytes(buffer)
    if digest is not None:
        digest.update(data)
    await asyncio.to_thread(out.write, data)
