"""Prometheus metrics: the controller's GET /metrics and each combiner's, who may read them,
and counters that move by what the rounds did (in one event loop, and over real loopback
processes where they must agree with the round records' traffic)."""

from __future__ import annotations

import asyncio
import json
import ssl

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from stratafl.controller.rest.app import create_api
from stratafl.controller.trust import Trust
from stratafl.controller.wiring import Controller
from stratafl.observe.combiner_metrics import CombinerMetrics, CountingSemaphore
from stratafl.observe.metrics import Link
from stratafl.observe.metrics_server import MetricsServer
from stratafl.records import RoundRecord, Traffic
from stratafl.security import Role, TokenVerifier
from stratafl.settings import SessionConfig
from stratafl.status import RoundStatus
from tests.support.asgi import SyncASGI
from tests.support.controllers import new_controller, open_controller
from tests.support.inprocess import Behaviour, InProcessFederation

DAY = 24 * 3600.0
MODEL = {"w": np.zeros((8, 4), np.float32), "b": np.zeros(4, np.float32)}


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A scrape's samples by (name, labels); parsing it also proves the format."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def _record(number: int, status: RoundStatus, up: int, down: int) -> RoundRecord:
    return RoundRecord(
        session_id="s",
        number=number,
        status=status,
        model_in="m",
        started_at=0.0,
        duration=1.5,
        traffic=Traffic(clients_up=7, clients_down=9, combiners_up=up, combiners_down=down),
    )


# -- the controller's GET /metrics --------------------------------------------------------------


@pytest.fixture
def controller(tmp_path):
    with open_controller(tmp_path, secure=True) as controller:
        yield controller


def _token(controller: Controller, role: Role) -> dict[str, str]:
    assert controller.trust is not None
    token, _ = controller.trust.issue(
        controller.store, name=f"test {role}", subject=role.value, role=role, ttl_seconds=DAY
    )
    return {"Authorization": f"Bearer {token}"}


def test_the_controllers_metrics_need_an_admin_token_and_count_recorded_rounds(controller):
    api = SyncASGI(create_api(controller))
    try:
        assert api.get("/metrics").status_code == 401
        refused = api.get("/metrics", headers=_token(controller, Role.CLIENT))
        assert refused.status_code == 403 and refused.json()["error"] == "PermissionDenied"
        asyncio.run(controller.discovery.register("k1", "127.0.0.1:7001", 10))
        asyncio.run(controller.discovery.heartbeat("k1", ["c1", "c2"]))
        controller.watchers.round_recorded(_record(1, RoundStatus.FINISHED, 100, 40))
        controller.watchers.round_recorded(_record(1, RoundStatus.FAILED, 5, 0))
        controller.watchers.round_recorded(_record(2, RoundStatus.FINISHED, 100, 40))
        answer = api.get("/metrics", headers=_token(controller, Role.ADMIN))
    finally:
        api.close()
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = scraped(answer.text)
    assert value(samples, "stratafl_rounds_total", status="finished") == 2
    assert value(samples, "stratafl_rounds_total", status="failed") == 1
    assert value(samples, "stratafl_round_duration_seconds_count") == 3
    assert value(samples, "stratafl_link_bytes_total", link="combiner", direction="in") == 205
    assert value(samples, "stratafl_link_bytes_total", link="combiner", direction="out") == 80
    assert value(samples, "stratafl_combiner_clients", combiner="k1") == 2
    assert value(samples, "stratafl_combiners_online") == 1
    assert value(samples, "stratafl_sessions_running") == 0
    assert total(samples, "process_resident_memory_bytes") > 0  # free with the client


def test_each_controller_has_its_own_registry(tmp_path):
    first, second = new_controller(tmp_path / "a"), new_controller(tmp_path / "b")
    first.watchers.round_recorded(_record(1, RoundStatus.FINISHED, 1, 1))
    assert first.metrics.registry.get_sample_value("stratafl_rounds_total", {"status": "finished"})
    assert not second.metrics.registry.get_sample_value(
        "stratafl_rounds_total", {"status": "finished"}
    )


# -- a combiner's counters, in one event loop ---------------------------------------------------


def _one_session(
    tmp_path, behaviours: list[Behaviour], config: SessionConfig
) -> tuple[list[RoundRecord], CollectorRegistry]:
    """Run one session on one in-process combiner with a client per behaviour; its round
    records and the combiner's metrics registry."""
    federation = InProcessFederation(tmp_path)
    combiner = federation.add_combiner("combiner-0")
    for index, behaviour in enumerate(behaviours):
        federation.add_client(combiner, index, behaviour)
    try:
        federation.seed(MODEL)

        async def run() -> str:
            session_id = await federation.sessions.start(config)
            assert federation.sessions.current is not None
            await federation.sessions.current
            return session_id

        rounds = federation.store.rounds(federation.run(run()))
    finally:
        federation.close()
    return rounds, combiner.rounds.metrics.registry


def test_a_combiners_counters_move_by_what_its_round_did(tmp_path):
    behaviours = [Behaviour.HONEST, Behaviour.HONEST, Behaviour.NAN]
    config = SessionConfig(rounds=2, round_timeout=5.0, wait_for_clients_seconds=0.0)
    rounds, registry = _one_session(tmp_path, behaviours, config)

    def get(name: str, **labels: str) -> float:
        found = registry.get_sample_value(name, labels)
        assert found is not None, (name, labels)
        return found

    assert [r.status for r in rounds] == ["finished", "finished"]
    assert get("stratafl_combiner_tasks_total", kind="train", outcome="ok") == 4
    assert get("stratafl_combiner_tasks_total", kind="train", outcome="rejected") == 2
    assert get("stratafl_combiner_tasks_total", kind="validate", outcome="ok") == 6
    assert get("stratafl_combiner_rejections_total", reason="checks") == 2  # NaN values
    assert get("stratafl_combiner_round_duration_seconds_count", kind="train") == 2
    updates_in = sum(r.traffic.clients_up for r in rounds)
    assert get("stratafl_link_bytes_total", link="client", direction="in") == updates_in > 0
    fetched = sum(r.traffic.combiners_down for r in rounds)
    assert get("stratafl_link_bytes_total", link="controller", direction="in") == fetched > 0
    model_bytes = 4 * (8 * 4 + 4)
    assert get("stratafl_combiner_fold_bytes_total") == 4 * model_bytes  # accepted only
    assert get("stratafl_combiner_fold_seconds_total") > 0
    assert get("stratafl_combiner_phase_seconds_total", phase="fetch") > 0
    assert get("stratafl_combiner_phase_seconds_total", phase="stage") > 0
    assert get("stratafl_combiner_updates_left_out_total") == 0  # fedavg uses every update


def test_a_combiner_counts_the_updates_its_rule_left_out(tmp_path):
    config = SessionConfig(
        rounds=1,
        min_clients=5,
        round_timeout=5.0,
        wait_for_clients_seconds=0.0,
        aggregator="krum:f=1",
    )
    rounds, registry = _one_session(tmp_path, [Behaviour.HONEST] * 5, config)
    assert [r.status for r in rounds] == ["finished"]
    left_out = [o for o in rounds[0].outcomes if o.left_out]
    assert len(left_out) == 4 and all(o.status == "ok" for o in left_out)  # krum keeps one
    assert registry.get_sample_value("stratafl_combiner_updates_left_out_total") == 4


def test_transfer_slots_in_use_are_counted_while_held():
    async def run() -> list[int]:
        slots = CountingSemaphore(2)
        seen = [slots.in_use]
        async with slots:
            seen.append(slots.in_use)
            async with slots:
                seen.append(slots.in_use)
        seen.append(slots.in_use)
        return seen

    assert asyncio.run(run()) == [0, 1, 2, 0]


# -- a combiner's GET /metrics ------------------------------------------------------------------


def _serve(server: MetricsServer, requests) -> list:
    """Start ``server`` on a free loopback port and run ``requests(url)`` against it."""

    async def run() -> list:
        port = await server.start("127.0.0.1", 0)
        try:
            return await requests(f"{server.scheme}://127.0.0.1:{port}")
        finally:
            await server.close()

    return asyncio.run(run())


def test_a_secured_combiner_serves_its_metrics_over_tls_to_admins_only(tmp_path):
    trust = Trust.load_or_create(tmp_path / "trust", ["127.0.0.1"])
    identity = trust.authority.issue("combiner-0", ["127.0.0.1"])
    verifier = TokenVerifier(trust.signer.public_key_pem)
    metrics = CombinerMetrics()
    metrics.received(Link.CLIENT, 123)
    admin, _ = trust.signer.issue("ops", Role.ADMIN, DAY)
    client, _ = trust.signer.issue("c1", Role.CLIENT, DAY)
    stranger = Trust.load_or_create(tmp_path / "other", ["127.0.0.1"]).signer
    other, _ = stranger.issue("ops", Role.ADMIN, DAY)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(identity.ca_pem)

    async def requests(url: str) -> list:
        bearer = {"Authorization": f"Bearer {admin}"}
        async with httpx.AsyncClient(
            verify=ssl.create_default_context(cafile=ca), timeout=10
        ) as http:
            answers = [
                await http.get(f"{url}/metrics"),
                await http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {client}"}),
                await http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {other}"}),
                await http.get(f"{url}/metrics", headers={"Authorization": "Basic eDp5"}),
                await http.get(f"{url}/other", headers=bearer),
                await http.post(f"{url}/metrics", headers=bearer),
                await http.get(f"{url}/metrics", headers={**bearer, "X-Big": "x" * 20_000}),
                await http.get(f"{url}/metrics", headers=bearer),
            ]
        async with httpx.AsyncClient(timeout=10) as plain:  # plain HTTP to the TLS port
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"{url.replace('https:', 'http:')}/metrics", headers=bearer)
        return answers

    server = MetricsServer(metrics.registry, verify=verifier.verify, identity=lambda: identity)
    assert server.scheme == "https"
    answers = _serve(server, requests)
    assert [a.status_code for a in answers] == [401, 403, 401, 401, 404, 405, 400, 200]
    for refused in answers[:-1]:
        body = refused.json()
        assert set(body) == {"error", "detail"} and "\n" not in body["detail"]
    assert answers[0].headers["www-authenticate"].startswith("Bearer")
    assert "another federation" in answers[2].json()["detail"]
    samples = scraped(answers[-1].text)
    assert value(samples, "stratafl_link_bytes_total", link="client", direction="in") == 123


def test_an_insecure_combiner_serves_plain_http_without_a_token():
    metrics = CombinerMetrics()

    async def requests(url: str) -> list:
        async with httpx.AsyncClient(timeout=10) as http:
            return [await http.get(f"{url}/metrics")]

    server = MetricsServer(metrics.registry)
    assert server.scheme == "http"
    (answer,) = _serve(server, requests)
    assert answer.status_code == 200
    assert "stratafl_combiner_tasks_total" in answer.text


# -- over real loopback processes ---------------------------------------------------------------


@pytest.mark.slow
def test_scraped_counters_agree_with_the_round_records(federation, monkeypatch):
    monkeypatch.setenv("STRATA_LOG_FORMAT", "json")  # the tiers inherit it
    with federation(clients=4, combiners=2) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(4)
        session, rounds = fed.run_session(SessionConfig(rounds=2, min_clients=4))
        assert session.status == "finished", session.reason
        admin = {"Authorization": f"Bearer {fed.admin_token}"}
        assert fed.ca_file is not None
        with httpx.Client(
            verify=ssl.create_default_context(cafile=fed.ca_file), timeout=30
        ) as http:
            assert http.get(f"{fed.url}/metrics").status_code == 401
            client_token = fed.token_file("someone", Role.CLIENT)
            assert client_token is not None
            bearer = {"Authorization": f"Bearer {client_token.read_text().strip()}"}
            assert http.get(f"{fed.url}/metrics", headers=bearer).status_code == 403
            controller = scraped(http.get(f"{fed.url}/metrics", headers=admin).text)
            combiners = []
            for name in ("combiner-0", "combiner-1"):
                tier = next(t for t in fed.group.tiers if t.name == name)
                ready = json.loads(tier.wait_ready())
                assert ready["metrics_url"].startswith("https://127.0.0.1:")
                assert http.get(ready["metrics_url"]).status_code == 401
                answer = http.get(ready["metrics_url"], headers=admin)
                assert answer.status_code == 200, answer.text
                combiners.append(scraped(answer.text))
        controller_log = fed.group.log_path("controller").read_text().splitlines()

    def both(name: str, **labels: str) -> float:
        return sum(total(samples, name, **labels) for samples in combiners)

    traffic = [r.traffic for r in rounds]
    assert value(controller, "stratafl_rounds_total", status="finished") == len(rounds) == 2
    assert value(controller, "stratafl_rounds_total", status="failed") == 0
    assert both("stratafl_combiner_tasks_total", kind="train", outcome="ok") == 4 * 2
    assert both("stratafl_combiner_clients_connected") == 4
    assert total(controller, "stratafl_combiner_clients") == 4
    partials = sum(t.combiners_up for t in traffic)
    assert partials > 0
    assert value(controller, "stratafl_link_bytes_total", link="combiner", direction="in") == (
        partials
    )
    assert both("stratafl_link_bytes_total", link="controller", direction="out") == partials
    fetched = sum(t.combiners_down for t in traffic)
    assert value(controller, "stratafl_link_bytes_total", link="combiner", direction="out") == (
        fetched
    )
    assert both("stratafl_link_bytes_total", link="controller", direction="in") == fetched
    assert both("stratafl_link_bytes_total", link="client", direction="in") == sum(
        t.clients_up for t in traffic
    )
    assert both("stratafl_link_bytes_total", link="client", direction="out") == sum(
        t.clients_down for t in traffic
    )
    round_lines = [
        line
        for line in (json.loads(text) for text in controller_log)  # every line is JSON
        if line.get("logger") == "stratafl.controller.rounds" and "round" in line
    ]
    assert [(r["round"], r["status"], r["clients"]) for r in round_lines] == [
        (1, "finished", 4),
        (2, "finished", 4),
    ]
