"""What one model transfer costs at each chunk size, on gRPC's sync and asyncio stacks.

A server process streams a model of P float32 parameters (DownloadModel) and takes one
(UploadUpdate) in chunks of the size the caller names; this process downloads and uploads
it N times per chunk size and stack, and reports the median wall time and the mean CPU time
of one transfer. It chose `stratafl.transport.streams.CHUNK_BYTES`: in Python, gRPC moves a
4 MiB message several times slower than four of 1 MiB. Prints a table and writes JSON.

    python benchmarks/chunk_sizes.py --params 1000000 --repeats 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np

from stratafl.params import specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.transport.streams import header_to_proto, params_chunks, receive_download
from stratafl.transport.streams import receive_params as receive_params_sync

SIZES = (4 << 20, 1 << 20, 256 << 10)
OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


def model(params: int) -> dict[str, np.ndarray]:
    return {"w": np.ones(params, np.float32)}


def messages(message: type, params: dict[str, np.ndarray], chunk_bytes: int) -> Iterator:
    layout = header_to_proto("m", specs_of(params))
    yield message(header=pb.UpdateHeader(model=layout) if message is pb.UpdateChunk else layout)
    for chunk in params_chunks(params, chunk_bytes):
        yield message(data=chunk)


class Server(pb_grpc.CombinerServicer):
    """Serves the model in the chunk size named by the request's model id."""

    def __init__(self, params: int) -> None:
        self.params = model(params)

    async def DownloadModel(  # noqa: N802 (gRPC's name)
        self, request: pb.ModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelChunk]:
        for message in messages(pb.ModelChunk, self.params, int(request.model_id)):
            yield message

    async def UploadUpdate(  # noqa: N802 (gRPC's name)
        self, request_iterator: AsyncIterator[pb.UpdateChunk], context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        async for _ in request_iterator:
            pass
        return pb.Ack(ok=True)


async def serve(params: int) -> None:
    server = grpc.aio.server(options=OPTIONS)
    pb_grpc.add_CombinerServicer_to_server(Server(params), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(repeats: int, once: Callable[[], None]) -> dict[str, float]:
    for _ in range(3):
        once()
    walls, cpu = [], cpu_seconds()
    for _ in range(repeats):
        started = time.perf_counter()
        once()
        walls.append(time.perf_counter() - started)
    return {
        "wall_ms_median": statistics.median(walls) * 1e3,
        "cpu_ms_mean": (cpu_seconds() - cpu) / repeats * 1e3,
    }


async def timed_async(repeats: int, once: Callable[[], Awaitable[None]]) -> dict[str, float]:
    for _ in range(3):
        await once()
    walls, cpu = [], cpu_seconds()
    for _ in range(repeats):
        started = time.perf_counter()
        await once()
        walls.append(time.perf_counter() - started)
    return {
        "wall_ms_median": statistics.median(walls) * 1e3,
        "cpu_ms_mean": (cpu_seconds() - cpu) / repeats * 1e3,
    }


def measure_sync(address: str, params: int, size: int, repeats: int) -> dict[str, dict]:
    update = model(params)
    with grpc.insecure_channel(address, options=OPTIONS) as channel:
        stub = pb_grpc.CombinerStub(channel)
        request = pb.ModelRequest(model_id=str(size))
        return {
            "download": timed(
                repeats, lambda: receive_params_sync(stub.DownloadModel(request), "model")
            ),
            "upload": timed(
                repeats, lambda: stub.UploadUpdate(messages(pb.UpdateChunk, update, size))
            ),
        }


async def measure_async(address: str, params: int, size: int, repeats: int) -> dict[str, dict]:
    update = model(params)
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        stub = pb_grpc.CombinerStub(channel)
        request = pb.ModelRequest(model_id=str(size))

        async def download() -> None:
            await receive_download(stub.DownloadModel(request), "model")

        async def upload() -> None:
            await stub.UploadUpdate(messages(pb.UpdateChunk, update, size))

        return {
            "download": await timed_async(repeats, download),
            "upload": await timed_async(repeats, upload),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/chunk_sizes.json"))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.params))
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--params", str(args.params)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        address = f"127.0.0.1:{server.stdout.readline().strip()}"
        rows = []
        for size in SIZES:
            for stack, result in (
                ("sync", measure_sync(address, args.params, size, args.repeats)),
                ("asyncio", asyncio.run(measure_async(address, args.params, size, args.repeats))),
            ):
                for direction, numbers in result.items():
                    rows.append({"chunk_kib": size >> 10, "stack": stack, "transfer": direction})
                    rows[-1].update(numbers)
    finally:
        server.kill()
    print(f"model: {args.params * 4 / 1e6:.1f} MB, {args.repeats} transfers each")
    print(f"{'chunk KiB':>9}  {'stack':<8} {'transfer':<9} {'median ms':>9} {'CPU ms':>7}")
    for row in rows:
        print(
            f"{row['chunk_kib']:>9}  {row['stack']:<8} {row['transfer']:<9} "
            f"{row['wall_ms_median']:>9.2f} {row['cpu_ms_mean']:>7.2f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"params": args.params, "rows": rows}, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
