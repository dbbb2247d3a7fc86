"""`strata swarm`: many light clients, each a real client on the wire.

The fast tests pin the parts (bounds, token files, the app, the wire helpers); the slow
ones run a secured federation (TLS and tokens) with a swarm of 50 clients in 2 processes,
and swarm sessions with FedDyn and with partial updates (the client protocol the swarm
drives is the client runtime's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest

from stratafl.aggregate.feddyn import split_dynamic
from stratafl.apps.noise import DEFAULT_LAYOUT, NoiseApp
from stratafl.client.app import ClientContext
from stratafl.client.models import ModelShelf
from stratafl.errors import AuthError, ConfigError
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.params import specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.security import Role, TokenSigner, TokenVerifier
from stratafl.settings import SessionConfig
from stratafl.status import OutcomeStatus, SessionStatus
from stratafl.swarm import Fleet, SwarmOptions
from stratafl.swarm.identities import Identity, read_tokens, split, write_tokens
from stratafl.swarm.shared import SHELF_MODELS
from stratafl.transport.channels import open_aio_channel
from stratafl.transport.streams import (
    header_to_proto,
    params_chunks,
    receive_download,
    send_model,
)
from stratafl.transport.task_stream import bearer_metadata
from tests.support.inprocess import aiter_of
from tests.support.paths import PULL_APP
from tests.support.swarm_apps import LAYOUT, PullApp

APP = "stratafl.apps.noise:make_app"
DAY = 24 * 3600.0


def _token(signer: TokenSigner, subject: str, role: Role = Role.CLIENT) -> str:
    return signer.issue(subject, role, DAY)[0]


# -- the parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"clients": 0}, "--clients"),
        ({"clients": 10, "processes": 11}, "--processes"),
        ({"clients": 100_000, "processes": 2}, "raise --processes"),
        ({"connecting": 0}, "--connecting"),
        ({"duration": 0.0}, "--duration"),
        ({"insecure": False}, "need tokens"),
        ({"insecure": False, "token_file": Path("a"), "tokens_file": Path("b")}, "not both"),
        ({"insecure": False, "token_file": Path("a")}, "--ca-file"),
        ({"insecure": True, "token_file": Path("a")}, "sends no tokens"),
    ],
)
def test_swarm_options_are_bounded(changes: dict[str, object], names: str) -> None:
    settings: dict[str, object] = {"controller": "http://127.0.0.1:1", "clients": 4}
    settings |= {"insecure": True} | changes
    with pytest.raises(ConfigError, match=names):
        SwarmOptions(**settings).check()  # type: ignore[arg-type]


def test_tokens_file_gives_each_client_its_token(tmp_path: Path) -> None:
    signer = TokenSigner.generate()
    identities = [Identity(f"c-{i}", _token(signer, f"c-{i}")) for i in range(5)]
    path = tmp_path / "tokens"
    write_tokens(path, identities)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_tokens(path, 3) == identities[:3]
    with pytest.raises(ConfigError, match="fewer than the 6 clients"):
        read_tokens(path, 6)


@pytest.mark.parametrize(
    ("lines", "names"),
    [
        (["not-a-token"], "line 1: malformed token"),
        (["# a comment", "COMBINER"], "line 2: a combiner token"),
        (["CLIENT", "", "CLIENT"], "line 3: a second token of client 'c'"),
    ],
)
def test_tokens_file_refuses_what_is_not_one_client_token_each(
    tmp_path: Path, lines: list[str], names: str
) -> None:
    signer = TokenSigner.generate()
    tokens = {"CLIENT": _token(signer, "c"), "COMBINER": _token(signer, "c", Role.COMBINER)}
    path = tmp_path / "tokens"
    path.write_text("\n".join(tokens.get(line, line) for line in lines) + "\n")
    with pytest.raises(ConfigError, match=names):
        read_tokens(path, 2)


def test_split_spreads_clients_evenly_and_in_order() -> None:
    identities = [Identity(f"c-{i}") for i in range(7)]
    runs = split(identities, 3)
    assert [len(run) for run in runs] == [3, 2, 2]
    assert [i for run in runs for i in run] == identities


def test_noise_app_returns_new_arrays_of_the_same_layout() -> None:
    app = NoiseApp()
    params = app.initial_params(0)
    assert sum(a.size for a in params.values()) == 17_500
    assert [tuple(a.shape) for a in params.values()] == list(DEFAULT_LAYOUT.values())
    for array in params.values():
        array.flags.writeable = False  # shared between clients: writing would raise
    result = app.train(params, {})
    assert specs_of(result.params) == specs_of(params)
    moved = np.concatenate([(result.params[k] - params[k]).ravel() for k in params])
    assert 0 < float(np.abs(moved).max()) < 0.1
    assert app.validate(params, {})["rms"] > 0


def test_download_is_rebuilt_read_only_on_the_shared_shelf_and_checked() -> None:
    params = NoiseApp().initial_params(1)
    header = header_to_proto("m1", specs_of(params))
    messages = list(send_model(pb.ModelChunk, header, params_chunks(params, chunk_bytes=4096)))
    got = asyncio.run(receive_download(aiter_of(messages), "model m1"))  # type: ignore[arg-type]
    assert all(np.array_equal(got[k], params[k]) for k in params)
    ModelShelf(SHELF_MODELS, shared=True).put("m1", got)  # what a swarm process does with it
    assert not any(a.flags.writeable for a in got.values())
    with pytest.raises(ValueError, match="ended after"):
        asyncio.run(receive_download(aiter_of(messages[:-1]), "model m1"))  # type: ignore[arg-type]


def test_a_private_shelf_leaves_the_arrays_writable() -> None:
    params = NoiseApp().initial_params(1)
    ModelShelf(1, shared=False).put("m1", params)
    assert all(a.flags.writeable for a in params.values())


def test_shelf_keeps_the_last_two_models() -> None:
    shelf = ModelShelf(SHELF_MODELS, shared=True)
    for model_id in ("a", "b", "c"):
        shelf.put(model_id, {})
    assert shelf.get("a") is None
    assert shelf.get("b") == {} and shelf.get("c") == {}


def test_a_verified_token_is_remembered_but_revocation_and_expiry_still_apply() -> None:
    signer = TokenSigner.generate()
    now = [1_000_000.0]
    verifier = TokenVerifier(signer.public_key_pem, clock=lambda: now[0], leeway_seconds=0)
    token, claims = signer.issue("c", Role.CLIENT, 60, now=now[0])
    assert verifier.verify(token) == claims
    assert verifier.verify(token) == claims  # the remembered signature
    altered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(AuthError, match="does not verify|malformed"):
        verifier.verify(altered)
    verifier.set_revoked([claims.token_id])
    with pytest.raises(AuthError, match="revoked"):
        verifier.verify(token)
    verifier.set_revoked([])
    now[0] += 61
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(token)


# -- a secured federation with a swarm ----------------------------------------------------


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    spec = FederationSpec(app=APP, clients=0, combiners=1, workdir=tmp_path_factory.mktemp("swarm"))
    with LocalFederation(spec) as running:
        running.client.upload_model(NoiseApp().initial_params(0))
        yield running


def _admin_token_file(federation: LocalFederation) -> Path:
    path = federation.workdir / "admin.token"
    assert federation.admin_token is not None
    path.write_text(federation.admin_token)
    return path


@pytest.mark.slow
def test_swarm_clients_all_take_part_in_a_secured_federation(
    federation: LocalFederation, tmp_path: Path
) -> None:
    clients = 50
    options = SwarmOptions(
        controller=federation.url,
        clients=clients,
        processes=2,
        token_file=_admin_token_file(federation),
        ca_file=federation.ca_file,
        save_tokens=tmp_path / "tokens",
    )
    with Fleet(options) as fleet:
        fleet.start()
        fleet.wait_connected(clients, timeout=120)
        config = SessionConfig(  # int8: the swarm encodes as the client runtime does
            rounds=2, min_clients=clients, round_timeout=120, compression="int8"
        )
        session, rounds = federation.run_session(config)
        final = fleet.stop()
    assert session.status == SessionStatus.FINISHED, session.reason
    expected = {f"swarm-{i}" for i in range(clients)}
    assert len(rounds) == 2
    for record in federation.client.rounds(session.id):
        assert set(record.participants) == expected
        assert {o.client_id for o in record.outcomes} == expected
        assert {o.status for o in record.outcomes} == {OutcomeStatus.OK}
        assert record.validation.clients == clients
    assert sum(s.updates_accepted for s in final) == 2 * clients
    assert sum(s.validations for s in final) == 2 * clients
    assert sum(s.updates_refused + s.app_failures for s in final) == 0
    assert len(read_tokens(tmp_path / "tokens", clients)) == clients  # saved for reuse


@pytest.mark.slow
def test_swarm_client_without_a_valid_token_is_refused(
    federation: LocalFederation, tmp_path: Path
) -> None:
    stranger = TokenSigner.generate()  # another federation's key: a token ours never signed
    forged = [Identity(f"forged-{i}", _token(stranger, f"forged-{i}")) for i in range(3)]
    write_tokens(tmp_path / "forged", forged)
    options = SwarmOptions(
        controller=federation.url,
        clients=3,
        tokens_file=tmp_path / "forged",
        ca_file=federation.ca_file,
    )
    with Fleet(options) as fleet:
        fleet.start()
        deadline = time.monotonic() + 60
        while fleet.totals().assign_errors < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        totals = fleet.totals()
    assert totals.assign_errors >= 3  # the controller refuses to assign them a combiner
    assert totals.streams_opened == 0
    assert not any(c.id.startswith("forged-") for c in federation.client.clients())

    # and the combiner refuses a task stream opened with such a token, whoever sent it
    combiner = federation.client.combiners()[0]
    assert federation.ca_file is not None
    ca = grpc.ssl_channel_credentials(root_certificates=federation.ca_file.read_bytes())

    async def open_stream() -> grpc.StatusCode:
        async with open_aio_channel(combiner.address, credentials=ca) as channel:
            call = pb_grpc.CombinerStub(channel).TaskStream(
                pb.ClientHello(client_id="forged-0"), metadata=bearer_metadata(forged[0].token)
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
            return refused.value.code()

    assert asyncio.run(open_stream()) == grpc.StatusCode.UNAUTHENTICATED


def _swarm_options(federation: LocalFederation, clients: int, **options: object) -> SwarmOptions:
    return SwarmOptions(
        controller=federation.url,
        clients=clients,
        token_file=_admin_token_file(federation),
        ca_file=federation.ca_file,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.slow
def test_a_swarm_session_with_feddyn_finishes_and_moves_the_server_state(
    federation: LocalFederation,
) -> None:
    """Each client trains the model part with its own g_i (the app refuses h) and
    validates the model without h; the final model carries FedDyn's h, moved."""
    clients = 6
    seed = federation.client.upload_model(PullApp(ClientContext()).initial_params(0))
    options = _swarm_options(
        federation, clients, app=PULL_APP, app_per_client=True, id_prefix="feddyn"
    )
    with Fleet(options) as fleet:
        fleet.start()
        fleet.wait_connected(clients, timeout=120)
        config = SessionConfig(
            rounds=2,
            min_clients=clients,
            round_timeout=120,
            seed_model_id=seed.id,
            drift_correction="feddyn",
            feddyn_alpha=0.1,
        )
        session, rounds = federation.run_session(config)
        final = fleet.stop()
    assert session.status == SessionStatus.FINISHED, session.reason
    assert len(rounds) == 2
    expected = {f"feddyn-{i}" for i in range(clients)}
    for record in federation.client.rounds(session.id):
        assert {o.client_id for o in record.outcomes} == expected
        assert {o.status for o in record.outcomes} == {OutcomeStatus.OK}
        assert record.validation.clients == clients
    assert sum(s.app_failures for s in final) == 0
    assert sum(s.updates_accepted for s in final) == 2 * clients
    model, h = split_dynamic(federation.client.download_params(session.final_model_id or ""))
    assert set(model) == set(LAYOUT)
    assert h and all(np.abs(value).max() > 0 for value in h.values())


@pytest.mark.slow
def test_a_swarm_session_with_partial_updates_finishes_and_sends_less(
    federation: LocalFederation,
) -> None:
    """Each update carries one of the noise app's two tensors: the same session's
    clients send fewer bytes than with full updates, and every update is accepted."""
    clients = 6
    seed = federation.client.upload_model(NoiseApp().initial_params(0))
    with Fleet(_swarm_options(federation, clients, id_prefix="partial")) as fleet:
        fleet.start()
        fleet.wait_connected(clients, timeout=120)
        settings: dict[str, object] = dict(
            rounds=1,
            min_clients=clients,
            round_timeout=120,
            seed_model_id=seed.id,
            validate_each_round=False,
        )
        full, full_rounds = federation.run_session(SessionConfig(**settings))  # type: ignore[arg-type]
        half = SessionConfig(**settings, partial_updates="random:fraction=0.5")  # type: ignore[arg-type]
        session, rounds = federation.run_session(half)
        final = fleet.stop()
    assert full.status == SessionStatus.FINISHED, full.reason
    assert session.status == SessionStatus.FINISHED, session.reason
    for record in rounds:
        assert [o.status for o in record.outcomes] == [OutcomeStatus.OK] * clients
    assert sum(s.updates_accepted for s in final) == 2 * clients
    up = [sum(r.traffic.clients_up for r in rs) for rs in (full_rounds, rounds)]
    assert up[1] < up[0], up
