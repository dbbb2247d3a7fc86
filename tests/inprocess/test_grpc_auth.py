"""Every gRPC method, walked from the service descriptors: a missing token, a wrong role,
an expired, a revoked and a foreign token are refused before any handler runs; the right
role gets through. The table of roles covers every method, and nothing else."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest

from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry
from stratafl.combiner.runner import CombinerRoundRunner
from stratafl.combiner.servicer import CombinerServicer
from stratafl.controller.discovery import Discovery
from stratafl.controller.servicer import ControllerServicer
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.security import Role, TokenSigner
from stratafl.security.policy import GRPC_ROLES
from stratafl.store.models import ModelStore
from stratafl.store.state import StateStore
from stratafl.transport.auth import AuthInterceptor
from stratafl.transport.channels import create_aio_server

SIGNER = TokenSigner.generate()


def _methods() -> list[tuple[str, bool, bool]]:
    """(path, client streams, server streams) of every RPC in stratafl.proto."""
    methods = []
    for service in pb.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            methods.append(
                (
                    f"/{service.full_name}/{method.name}",
                    method.client_streaming,
                    method.server_streaming,
                )
            )
    return methods


def test_the_role_table_names_every_method_and_nothing_else() -> None:
    assert {path for path, _, _ in _methods()} == set(GRPC_ROLES)
    assert all(GRPC_ROLES.values()), "every gRPC method needs a role: none is public"


def _token(role: Role, *, expired: bool = False, signer: TokenSigner = SIGNER) -> str:
    now = time.time() - 10_000 if expired else None
    token, _ = signer.issue(f"someone-{role}", role, 60, now=now)
    return token


async def _call(
    channel: grpc.aio.Channel, path: str, streams: tuple[bool, bool], token: str | None
):
    """Call ``path`` with an empty request; returns the status code (OK if it got through
    the interceptor and the handler answered, whatever it answered)."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    client_streams, server_streams = streams
    empty = b""
    identity = lambda raw: raw  # noqa: E731 - send and receive raw bytes
    try:
        if client_streams and server_streams:
            call = channel.stream_stream(path, identity, identity)(
                iter([empty]), metadata=metadata, timeout=5
            )
            async for _ in call:
                break
        elif client_streams:
            await channel.stream_unary(path, identity, identity)(
                iter([empty]), metadata=metadata, timeout=5
            )
        elif server_streams:
            call = channel.unary_stream(path, identity, identity)(
                empty, metadata=metadata, timeout=5
            )
            async for _ in call:
                break
        else:
            await channel.unary_unary(path, identity, identity)(empty, metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def _walk(tmp_path: Path) -> dict[str, dict[str, tuple[grpc.StatusCode, str]]]:
    verifier = SIGNER.verifier()
    revoked, revoked_claims = SIGNER.issue("revoked-one", Role.CLIENT, 60)
    verifier.set_revoked([revoked_claims.token_id])
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}").open()
    server, port = create_aio_server(
        "127.0.0.1:0", interceptors=[AuthInterceptor(verifier.verify, GRPC_ROLES)]
    )

    async def no_model(model_id: str):  # an empty stream: the round is refused, cleanly
        for message in ():
            yield message

    registry = ClientRegistry(10, on_change=lambda client_id, connected: None)
    cache = ModelCache(tmp_path / "models", no_model)
    runner = CombinerRoundRunner("combiner-0", registry, cache, tmp_path / "updates")
    pb_grpc.add_CombinerServicer_to_server(CombinerServicer(registry, cache, runner), server)
    pb_grpc.add_ControllerServicer_to_server(
        ControllerServicer(Discovery(store), ModelStore(tmp_path / "store")), server
    )
    await server.start()
    results: dict[str, dict[str, tuple[grpc.StatusCode, str]]] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for path, *streams in _methods():
                allowed = next(iter(GRPC_ROLES[path]))
                wrong = next(r for r in Role if r not in GRPC_ROLES[path])
                cases = {
                    "missing": None,
                    "garbage": "st1.not.a-token",
                    "wrong role": _token(wrong),
                    "expired": _token(allowed, expired=True),
                    "revoked": revoked if allowed == Role.CLIENT else _token(allowed, expired=True),
                    "foreign": _token(allowed, signer=TokenSigner.generate()),
                    "allowed": _token(allowed),
                }
                results[path] = {
                    case: await _call(channel, path, (streams[0], streams[1]), token)
                    for case, token in cases.items()
                }
    finally:
        await server.stop(None)
        store.close()
    return results


def test_every_method_refuses_every_bad_credential_and_admits_its_role(tmp_path: Path) -> None:
    results = asyncio.run(_walk(tmp_path))
    assert set(results) == set(GRPC_ROLES)
    for path, codes in results.items():
        for case in ("missing", "garbage", "expired", "revoked", "foreign"):
            assert codes[case][0] == grpc.StatusCode.UNAUTHENTICATED, (path, case, codes[case])
        assert codes["wrong role"][0] == grpc.StatusCode.PERMISSION_DENIED, (path, codes)
        assert "may not call this" in codes["wrong role"][1]
        # the right role passes the interceptor; the handler may still refuse what is asked
        # (an empty request names no combiner, no task) but never for the token's role
        code, details = codes["allowed"]
        assert code != grpc.StatusCode.UNAUTHENTICATED and "may not call this" not in details, (
            path,
            code,
            details,
        )


@pytest.mark.parametrize("role", list(Role))
def test_a_token_never_appears_in_what_a_refused_caller_is_told(role: Role) -> None:
    from stratafl.errors import AuthError
    from stratafl.transport.auth import check_caller

    token = _token(role, expired=True)
    with pytest.raises(AuthError) as refused:
        check_caller(token, frozenset(Role), SIGNER.verifier().verify)
    assert token not in str(refused.value) and token.split(".")[1] not in str(refused.value)
