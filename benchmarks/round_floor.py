"""The floor of a round: the time to move its bytes over gRPC on loopback, and nothing else.

A round of K clients and a model of M bytes moves, through one combiner, M from the
controller, K x M down to the clients, K x M up from them, and M back to the controller.
This measures exactly those transfers with gRPC (the same 4 MiB chunks, message limits and,
unless ``--insecure``, TLS as stratafl's links) between two processes of this machine: a
server that streams bytes out and takes them in, and a client process that runs the K
downloads, then the K uploads, concurrently, then the controller's two. No model, no
fold, no database: what remains of a measured round above this floor is what stratafl
adds. Prints a table and writes JSON.

    python benchmarks/round_floor.py --workload 10x1000000 --workload 2x25000000 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from stratafl.security.certs import CertificateAuthority
from stratafl.transport.channels import create_aio_server, open_aio_channel
from stratafl.transport.streams import CHUNK_BYTES

DOWN, UP = "/floor.Bytes/Down", "/floor.Bytes/Up"
CHUNK = b"\x01" * CHUNK_BYTES


async def _down(request: bytes, context: grpc.aio.ServicerContext):
    left = int.from_bytes(request, "little")
    while left > 0:
        yield CHUNK[: min(left, CHUNK_BYTES)]
        left -= CHUNK_BYTES


async def _up(requests, context: grpc.aio.ServicerContext) -> bytes:
    total = 0
    async for chunk in requests:
        total += len(chunk)
    return total.to_bytes(8, "little")


async def serve(folder: Path, secured: bool) -> None:
    """The server process: streams bytes out (Down) and takes them in (Up)."""
    credentials = None
    if secured:
        identity = CertificateAuthority.load_or_create(folder).issue("floor", ["127.0.0.1"])
        credentials = grpc.ssl_server_credentials([(identity.key_pem, identity.cert_pem)])
    server, port = create_aio_server("127.0.0.1:0", credentials=credentials)
    handlers = {
        "Down": grpc.unary_stream_rpc_method_handler(_down),
        "Up": grpc.stream_unary_rpc_method_handler(_up),
    }
    generic = grpc.method_handlers_generic_handler("floor.Bytes", handlers)
    server.add_generic_rpc_handlers((generic,))
    await server.start()
    (folder / "port").write_text(str(port))
    await server.wait_for_termination()


async def _download(channel: grpc.aio.Channel, nbytes: int) -> None:
    received = 0
    async for chunk in channel.unary_stream(DOWN)(nbytes.to_bytes(8, "little")):
        received += len(chunk)
    assert received == nbytes, (received, nbytes)


async def _upload(channel: grpc.aio.Channel, nbytes: int) -> None:
    async def chunks():
        left = nbytes
        while left > 0:
            yield CHUNK[: min(left, CHUNK_BYTES)]
            left -= CHUNK_BYTES

    answer = await channel.stream_unary(UP)(chunks())
    assert int.from_bytes(answer, "little") == nbytes


async def one_round(address: str, credentials, clients: int, nbytes: int) -> dict[str, float]:
    """The round's transfers, each on its own channel (own connection), as the tiers do."""
    channels = [open_aio_channel(address, credentials=credentials) for _ in range(clients + 1)]
    try:
        for channel in channels:
            await channel.channel_ready()
        controller, fleet = channels[0], channels[1:]
        started = time.perf_counter()
        await _download(controller, nbytes)
        fetched = time.perf_counter()
        await asyncio.gather(*(_download(c, nbytes) for c in fleet))
        downloaded = time.perf_counter()
        await asyncio.gather(*(_upload(c, nbytes) for c in fleet))
        uploaded = time.perf_counter()
        await _upload(controller, nbytes)
        done = time.perf_counter()
    finally:
        for channel in channels:
            await channel.close()
    return {
        "fetch": fetched - started,
        "clients_down": downloaded - fetched,
        "clients_up": uploaded - downloaded,
        "partial_up": done - uploaded,
        "round": done - started,
    }


def measure(clients: int, params: int, repeats: int, secured: bool) -> dict:
    nbytes = params * 4
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(folder)] + ([] if secured else ["--insecure"])
        )
        try:
            while not (folder / "port").exists():
                if server.poll() is not None:
                    raise SystemExit("the floor's server exited; see its output above")
                time.sleep(0.05)
            address = f"127.0.0.1:{(folder / 'port').read_text()}"
            credentials = (
                grpc.ssl_channel_credentials((folder / "ca.crt").read_bytes()) if secured else None
            )
            rounds = [
                asyncio.run(one_round(address, credentials, clients, nbytes))
                for _ in range(repeats + 1)
            ][1:]  # the first warms both processes up
        finally:
            server.terminate()
            server.wait()
    moved = (2 * clients + 2) * nbytes
    median = {part: statistics.median(r[part] for r in rounds) for part in rounds[0]}
    return {
        "clients": clients,
        "params": params,
        "model_mb": nbytes / 1e6,
        "secured": secured,
        "repeats": repeats,
        "bytes_per_round": moved,
        "seconds_median": median,
        "round_seconds": [r["round"] for r in rounds],
        "mb_per_s": moved / median["round"] / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workload",
        action="append",
        help="CLIENTSxPARAMS (float32), e.g. 10x1000000; default: 10x1000000 and 2x25000000",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--insecure", action="store_true", help="plain gRPC, no TLS")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/round_floor.json"))
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve, not args.insecure))
        return
    workloads = args.workload or ["10x1000000", "2x25000000"]
    results = []
    for workload in workloads:
        clients, params = (int(part) for part in workload.split("x"))
        results.append(measure(clients, params, args.repeats, not args.insecure))
    print(
        f"{'clients':>7} {'model MB':>9} {'TLS':>4} {'floor s':>8} {'fetch':>6} {'down':>6} "
        f"{'up':>6} {'partial':>7} {'MB/s':>6}"
    )
    for r in results:
        s = r["seconds_median"]
        print(
            f"{r['clients']:>7} {r['model_mb']:>9.0f} {'yes' if r['secured'] else 'no':>4} "
            f"{s['round']:>8.3f} {s['fetch']:>6.3f} {s['clients_down']:>6.3f} "
            f"{s['clients_up']:>6.3f} {s['partial_up']:>7.3f} {r['mb_per_s']:>6.0f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
