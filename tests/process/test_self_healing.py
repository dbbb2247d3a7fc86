"""Restart anything, lose nothing: tiers find each other again after a kill -9, the load
evens out after a combiner comes back, nothing a dead process left stays on disk, and a
server bound to every interface announces a name others can reach.

The process tests (marked slow) run real, secured federations on loopback; the others
pin the pieces in-process: the client's reconnect loop, the combiner's moves, its work
folder, its swappable trust, and the advertised addresses.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import grpc.aio
import numpy as np
import pytest

from stratafl.client.counters import ClientCounters
from stratafl.client.models import ModelShelf
from stratafl.client.protocol import ClientProtocol
from stratafl.client.runtime import ClientRuntime
from stratafl.client.state import ClientState
from stratafl.combiner.enrolment import Enrolment, ServingTrust, enrol_when_reachable
from stratafl.combiner.main import CombinerOptions, enrolment_plan
from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry, StreamEnd
from stratafl.combiner.runner import CombinerRoundRunner
from stratafl.combiner.servicer import CombinerServicer
from stratafl.combiner.workdir import WorkdirClaim
from stratafl.controller.discovery import Discovery
from stratafl.controller.main import ControllerOptions, serve_controller
from stratafl.errors import AuthError, ConfigError, UnavailableError
from stratafl.launch.federation import LocalFederation
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.restapi.schema import Assignment
from stratafl.security import CertificateAuthority, Role, TokenSigner
from stratafl.settings import SessionConfig
from stratafl.store.state import StateStore
from stratafl.transport.addresses import advertised_host, host_port
from stratafl.transport.auth import AuthInterceptor
from stratafl.transport.backoff import Backoff
from stratafl.transport.channels import create_aio_server
from stratafl.transport.credentials import INSECURE
from tests.support.combiner_runner import combiner_runner

# -- advertised addresses ------------------------------------------------------------------


def test_a_wildcard_bind_without_an_advertised_name_is_refused_with_the_fix():
    for host in ("0.0.0.0", "::"):
        with pytest.raises(ConfigError) as refused:
            advertised_host(host, None)
        assert str(refused.value) == (
            f"--host {host} needs --advertise-address NAME_OR_IP that others reach this host at"
        )
    with pytest.raises(ConfigError, match="reaches no one"):
        advertised_host("0.0.0.0", "0.0.0.0")
    assert advertised_host("0.0.0.0", "edge-1.example.org") == "edge-1.example.org"
    assert advertised_host("10.0.0.5", None) == "10.0.0.5"
    assert host_port("::1", 50051) == "[::1]:50051"
    assert host_port("[2001:db8::1]", 1) == "[2001:db8::1]:1"
    assert host_port("edge-1", 2) == "edge-1:2"


def test_neither_tier_starts_bound_to_every_interface_without_an_advertised_name(tmp_path):
    options = ControllerOptions(workdir=tmp_path / "controller", host="0.0.0.0")
    with pytest.raises(ConfigError, match="needs --advertise-address"):
        asyncio.run(serve_controller(options))
    assert not (tmp_path / "controller").exists()  # refused before anything was made
    combiner = CombinerOptions(
        controller="http://127.0.0.1:1", workdir=tmp_path / "c", host="0.0.0.0", insecure=True
    )
    with pytest.raises(ConfigError, match="needs --advertise-address"):
        enrolment_plan(combiner)


def test_a_combiner_enrols_for_the_name_it_advertises(tmp_path):
    options = CombinerOptions(
        controller="http://127.0.0.1:1",
        workdir=tmp_path,
        host="10.1.2.3",
        advertise_address="edge-1.example.org",
        combiner_id="edge-1",
        insecure=True,
    )
    with pytest.raises(ConfigError, match="loopback"):  # --insecure stays on loopback
        enrolment_plan(options)
    plan = enrolment_plan(
        CombinerOptions(
            controller="http://127.0.0.1:1",
            workdir=tmp_path,
            host="127.0.0.1",
            advertise_address="localhost",
            combiner_id="edge-1",
            insecure=True,
        )
    )
    assert plan.hosts == ["localhost", "127.0.0.1"] and plan.combiner_id == "edge-1"


# -- the client's reconnect loop -------------------------------------------------------


class _ScriptEnded(Exception):
    """The script is done: the loop ends at its next wait."""


def _status(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """A failed call as the asyncio gRPC API raises it."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), code.name)


class ScriptedProtocol(ClientProtocol):
    """The client protocol with a controller and a combiner that follow a script; its
    waits are recorded instead of slept."""

    def __init__(self, script: list[str]) -> None:
        super().__init__(
            None,  # type: ignore[arg-type]  # assign is scripted: no controller is asked
            channel_credentials=None,
            shelf=ModelShelf(1, shared=False),
            counters=ClientCounters(),
            connecting=asyncio.Semaphore(1),
            sleep=self._wait,
        )
        self.script = script
        self.asked: list[tuple[str | None, int]] = []
        self.waits: list[float] = []
        self.stopped = False

    async def _wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.stopped:
            raise _ScriptEnded

    async def assign(self, client: ClientState, failed_combiner: str | None) -> Assignment:
        self.asked.append((failed_combiner, client.backoff.failures))
        if not self.script:  # the end of the script
            self.stopped = True
        if not self.script or self.script.pop(0) == "down":
            raise UnavailableError("the controller cannot be reached")
        return Assignment(combiner_id="k", address="127.0.0.1:1")

    async def serve(self, client: ClientState, assignment: Assignment) -> None:
        step = self.script.pop(0)
        if step.startswith("open"):
            client.backoff.reset()  # as `ClientProtocol.serve` does when a stream opens
        if step.endswith("moved"):
            raise _status(grpc.StatusCode.ABORTED)
        raise _status(grpc.StatusCode.UNAVAILABLE)


def test_the_client_backoff_grows_while_down_and_starts_short_after_a_stream_opened():
    client = ScriptedProtocol(
        ["down", "down", "down", "down", "up", "open, then moved", "up", "refused"]
    )
    with pytest.raises(_ScriptEnded):
        asyncio.run(client.run(ClientState("c0", app=None)))  # type: ignore[arg-type]
    assert client.asked == [
        (None, 0),
        (None, 1),
        (None, 2),
        (None, 3),
        (None, 4),
        # the stream opened (backoff reset), then the controller moved the client: it asks
        # again at once, without calling its combiner failed
        (None, 1),
        # this time the combiner could not be reached: named, and the backoff grows again
        ("k", 2),
    ]
    assert client.counters.moves == 1
    waits = client.waits
    windows = [0.2, 0.4, 0.8, 1.6, 0.2, 0.4, 0.8]
    assert len(waits) == len(windows)
    assert all(0 <= w <= window for w, window in zip(waits, windows, strict=True))


# -- the combiner: moves, leftovers, trust ----------------------------------------------


def test_an_open_stream_is_announced_and_a_move_ends_it_with_aborted(tmp_path):
    """Over a real gRPC stream: the client sees its stream open (its backoff resets) and a
    move ends it with the status that sends it back to the controller."""
    ready, finished = threading.Event(), threading.Event()
    served: dict[str, object] = {}

    async def no_model(model_id: str):
        for message in ():
            yield message

    async def combiner() -> None:
        registry = ClientRegistry(10, on_change=lambda client_id, connected: None)
        cache = ModelCache(tmp_path / "models", no_model)
        rounds = CombinerRoundRunner("k", registry, cache, tmp_path / "updates")
        server, port = create_aio_server("127.0.0.1:0")
        pb_grpc.add_CombinerServicer_to_server(CombinerServicer(registry, cache, rounds), server)
        await server.start()
        served["port"] = port
        ready.set()
        for _ in range(1000):
            if registry.is_connected("c0"):
                served["moved"] = registry.move(["c0"], busy=rounds.busy_clients())
                break
            await asyncio.sleep(0.01)
        await asyncio.to_thread(finished.wait, 30)
        await server.stop(None)

    thread = threading.Thread(target=asyncio.run, args=(combiner(),))
    thread.start()
    try:
        assert ready.wait(30)
        runtime = ClientRuntime("c0", "http://127.0.0.1:1", app=None)  # type: ignore[arg-type]
        protocol, client = runtime.protocol(), runtime.state
        client.backoff.failures = 3
        with pytest.raises(grpc.RpcError) as ended:
            asyncio.run(
                protocol.serve(
                    client, Assignment(combiner_id="k", address=f"127.0.0.1:{served['port']}")
                )
            )
    finally:
        finished.set()
        thread.join(30)
    assert served["moved"] == ["c0"] and protocol.counters.streams_opened == 1
    assert client.backoff.failures == 0  # the open stream reset the backoff
    assert ended.value.code() == grpc.StatusCode.ABORTED  # type: ignore[attr-defined]
    assert "ask the controller for a combiner" in ended.value.details()  # type: ignore[attr-defined]


def test_a_combiner_moves_idle_clients_only_and_at_once(tmp_path):
    async def scenario() -> None:
        runner, registry = combiner_runner(tmp_path)
        streams = {c: registry.connect(c) for c in ("c0", "c1", "c2")}
        spec = pb.RoundSpec(
            round=1, kind=pb.VALIDATE, model_id="m", client_ids=["c1"], timeout_seconds=30
        )
        running = asyncio.ensure_future(runner.run(spec))
        for _ in range(1000):  # the model is fetched, then the task pushed
            if runner.busy_clients():
                break
            await asyncio.sleep(0.01)
        (busy,) = runner.busy_clients()
        moved = registry.move(["c0", "c1", "c2", "nobody"], busy=runner.busy_clients())
        assert sorted(moved) == sorted({"c0", "c1", "c2"} - {busy})
        assert registry.ids() == [busy]  # gone now, not when their streams wind down
        for client_id in moved:
            assert streams[client_id].tasks.get_nowait() is StreamEnd.MOVED
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    asyncio.run(scenario())


def test_a_combiner_clears_what_a_dead_predecessor_left_and_holds_its_folder(tmp_path):
    workdir = tmp_path / "combiner-0"
    for leftover in ("updates/abc.safetensors", "models/m1.safetensors", "models/x.partial"):
        (workdir / leftover).parent.mkdir(parents=True, exist_ok=True)
        (workdir / leftover).write_bytes(b"left behind")
    (workdir / "notes.txt").write_text("not ours to delete")
    with WorkdirClaim(workdir):
        assert list((workdir / "updates").iterdir()) == []
        assert list((workdir / "models").iterdir()) == []
        assert (workdir / "notes.txt").exists()
        with pytest.raises(ConfigError, match="its own --workdir"):
            WorkdirClaim(workdir).claim()
    with WorkdirClaim(workdir):  # the lock went with its holder
        pass


def _enrolment(ca: CertificateAuthority, signer: TokenSigner) -> Enrolment:
    return Enrolment(
        combiner_id="k",
        grpc_address="127.0.0.1:1",
        dialing=INSECURE,
        identity=ca.issue("k", ["127.0.0.1"]),
        token_key_pem=signer.public_key_pem.decode(),
        ca_pem=ca.ca_pem.decode(),
    )


class _Status200(pb_grpc.CombinerServicer):
    async def GetStatus(self, request, context):  # noqa: N802
        return pb.CombinerStatus(combiner_id="k")


def test_a_new_enrolment_takes_effect_while_the_combiner_serves(tmp_path):
    """A controller whose trust was made anew: the combiner serves the new certificate
    and checks tokens with the new key, without restarting its server."""
    old_ca = CertificateAuthority.load_or_create(tmp_path / "old")
    new_ca = CertificateAuthority.load_or_create(tmp_path / "new")
    old_key, new_key = TokenSigner.generate(), TokenSigner.generate()
    trust = ServingTrust(_enrolment(old_ca, old_key))
    roles = {"/stratafl.v1.Combiner/GetStatus": frozenset({Role.CONTROLLER})}

    async def status(port: int, ca: CertificateAuthority, signer: TokenSigner) -> grpc.StatusCode:
        token, _ = signer.issue("controller", Role.CONTROLLER, 60)
        credentials = grpc.ssl_channel_credentials(ca.ca_pem)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            try:
                await pb_grpc.CombinerStub(channel).GetStatus(
                    pb.StatusRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    async def scenario() -> list[grpc.StatusCode]:
        server = grpc.aio.server(interceptors=[AuthInterceptor(trust.verify, roles)])
        pb_grpc.add_CombinerServicer_to_server(_Status200(), server)
        port = server.add_secure_port("127.0.0.1:0", trust.server_credentials())
        await server.start()
        try:
            before = [await status(port, old_ca, old_key), await status(port, new_ca, new_key)]
            trust.update(_enrolment(new_ca, new_key))
            after = [await status(port, new_ca, new_key), await status(port, old_ca, old_key)]
        finally:
            await server.stop(None)
        return before + after

    ok, unavailable = grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE
    # before: only the old CA's clients get through; after: only the new one's
    assert asyncio.run(scenario()) == [ok, unavailable, ok, unavailable]
    token, _ = old_key.issue("someone", Role.CLIENT, 60)
    with pytest.raises(AuthError):
        trust.verify(token)


def test_enrolment_waits_for_a_controller_that_is_not_up_yet():
    attempts: list[int] = []

    def attempt() -> Enrolment:
        attempts.append(1)
        if len(attempts) < 4:
            raise UnavailableError("cannot reach the controller at https://127.0.0.1:1")
        return Enrolment(combiner_id="k", grpc_address="127.0.0.1:2", dialing=INSECURE)

    async def scenario(retry_refusals: bool) -> Enrolment | None:
        backoff = Backoff(0.001, 0.002)
        return await enrol_when_reachable(
            attempt, asyncio.Event(), backoff, retry_refusals=retry_refusals
        )

    enrolment = asyncio.run(scenario(False))
    assert enrolment is not None and enrolment.grpc_address == "127.0.0.1:2"
    assert len(attempts) == 4

    def refused() -> Enrolment:
        raise AuthError("this token was revoked")

    with pytest.raises(AuthError):  # at start, a refusal stops the combiner with the reason
        asyncio.run(
            enrol_when_reachable(refused, asyncio.Event(), Backoff(1, 1), retry_refusals=False)
        )


def test_a_new_controller_shows_no_combiner_online_until_it_registers_again(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}").open()
    try:
        before = Discovery(store)
        asyncio.run(before.register("a", "127.0.0.1:1", 10))
        asyncio.run(before.assign("c0"))
        asyncio.run(before.client_event("a", "c0", connected=True))
        after = Discovery(store)  # the restarted controller, same database
        assert asyncio.run(after.forget_stored("the controller restarted")) == ["a"]
        assert [(c.id, c.status) for c in store.combiners()] == [("a", "offline")]
        assert [c.status for c in store.clients()] == ["disconnected"]
        assert asyncio.run(after.forget_stored("again")) == []
    finally:
        store.close()


# -- real processes ---------------------------------------------------------------------


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _holders(fed: LocalFederation) -> dict[str, int]:
    """How many connected clients each combiner holds, as the controller reports it."""
    counts: dict[str, int] = {}
    for client in fed.client.clients():
        if client.status == "connected" and client.combiner_id is not None:
            counts[client.combiner_id] = counts.get(client.combiner_id, 0) + 1
    return counts


def _events(fed: LocalFederation, kind: str) -> list:
    return [e for e in fed.client.events(limit=1000) if e.kind == kind]


# A session started right after a restart must find every client back: it waits at most
# this long for them, far less than the 77 s an operator once watched in vain.
BACK_WITHIN_SECONDS = 20.0


@pytest.mark.slow
def test_a_combiner_killed_and_restarted_gets_its_clients_back_and_clears_its_leftovers(
    federation,
):
    with federation(clients=3, combiners=1) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(3)
        fed.kill("combiner-0")
        workdir = fed.workdir / "combiner-0"
        for leftover in ("updates/dead.safetensors", "models/dead.safetensors"):
            (workdir / leftover).write_bytes(b"spooled by the dead process")
        fed.start_combiner(0).wait_ready()
        assert list((workdir / "updates").iterdir()) == []
        assert list((workdir / "models").iterdir()) == []
        config = SessionConfig(
            rounds=1, min_clients=3, wait_for_clients_seconds=BACK_WITHIN_SECONDS
        )
        session, rounds = fed.run_session(config)
        assert session.status == "finished", session.reason
        assert sorted(rounds[0].participants) == ["client-0", "client-1", "client-2"]
        assert {o.combiner_id for o in rounds[0].outcomes} == {"combiner-0"}


@pytest.mark.slow
def test_after_a_combiner_comes_back_the_load_evens_out(federation):
    with federation(clients=6, combiners=2) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(6)
        fed.kill("combiner-0")
        _wait_for(lambda: _holders(fed) == {"combiner-1": 6}, 60, "every client on combiner-1")
        fed.start_combiner(0).wait_ready()
        _wait_for(
            lambda: _holders(fed) == {"combiner-0": 3, "combiner-1": 3},
            60,
            "the controller to move half the clients back",
        )
        assert "combiner-1" in {e.source for e in _events(fed, "clients_moved")}
        session, rounds = fed.run_session(SessionConfig(rounds=1, min_clients=6))
        assert session.status == "finished", session.reason
        served = [o.combiner_id for o in rounds[0].outcomes if o.status == "ok"]
        assert sorted(served) == ["combiner-0"] * 3 + ["combiner-1"] * 3
        # each client answered once per task: no client was moved with a task in flight
        assert len(rounds[0].participants) == 6


@pytest.mark.slow
def test_combiners_find_a_restarted_controller_on_a_new_grpc_port(federation):
    with federation(clients=2, combiners=2) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(2)
        old_grpc = fed.grpc_address
        fed.kill("controller")
        killed_at = time.time()
        staging = fed.workdir / "controller" / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        (staging / "upload-dead.partial").write_bytes(b"half an upload")
        fed.start_controller(new_grpc_port=True)
        assert fed.grpc_address != old_grpc, "the port did not change: nothing was tested"
        assert not (staging / "upload-dead.partial").exists()
        _wait_for(
            lambda: {c.status for c in fed.client.combiners()} == {"online"},
            60,
            "both combiners to register with the new controller",
        )
        registered = [e for e in _events(fed, "combiner_registered") if e.time > killed_at]
        assert {e.source for e in registered} == {"combiner-0", "combiner-1"}
        config = SessionConfig(
            rounds=1, min_clients=2, wait_for_clients_seconds=BACK_WITHIN_SECONDS
        )
        session, rounds = fed.run_session(config)
        assert session.status == "finished", session.reason
        assert sorted(rounds[0].participants) == ["client-0", "client-1"]
        params = fed.client.download_params(session.final_model_id or "")
        np.testing.assert_allclose(params["w"], (10 * 1 + 20 * 2) / 30, rtol=1e-6)


@pytest.mark.slow
def test_a_combiner_started_before_the_controller_waits_and_joins(federation):
    with federation(clients=2, combiners=1) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(2)
        fed.token_file("combiner-1", Role.COMBINER)  # issued while the controller is up
        fed.kill("controller")
        early = fed.start_combiner(1)
        log = early.log_path
        _wait_for(
            lambda: log.exists() and "cannot reach the controller yet" in log.read_text(),
            60,
            "combiner-1 to try the controller",
        )
        assert early.process.poll() is None, f"combiner-1 exited; see {log}"
        fed.start_controller()
        early.wait_ready()
        _wait_for(
            lambda: _holders(fed) == {"combiner-0": 1, "combiner-1": 1},
            60,
            "one client to move to combiner-1",
        )
        session, rounds = fed.run_session(SessionConfig(rounds=1, min_clients=2))
        assert session.status == "finished", session.reason
        assert {o.combiner_id for o in rounds[0].outcomes} == {"combiner-0", "combiner-1"}
