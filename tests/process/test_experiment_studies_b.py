"""Studies 5, 6 and 10 (backdoor, model poisoning, across combiners), their scoring and
summaries, and the client placement study 10 needs: discovery honours a preferred combiner
only while it has room, the rebalancer leaves placed clients be, and in a real federation
the placed clients train where they were placed. The quick studies run end to end."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from stratafl.aggregate import parse_aggregator
from stratafl.attacks import Backdoor, attack_success_rate
from stratafl.controller.balance import Rebalancer
from stratafl.controller.discovery import Discovery
from stratafl.data.fashion_mnist import FILES, SYSTEM_DIR
from stratafl.errors import ConfigError
from stratafl.experiments import (
    STUDIES,
    Size,
    across_combiners,
    backdoor,
    label_flipping,
    model_poisoning,
)
from stratafl.experiments.poisoning import backdoor_success, summarise
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.settings import SessionConfig
from stratafl.store.state import StateStore
from tests.support.paths import TEST_APP
from tests.support.strata import strata_succeeds

HAS_DATA = all((SYSTEM_DIR / name).is_file() for name in FILES.values())


def test_the_registry_runs_the_attack_studies_after_label_flipping():
    names = list(STUDIES)
    assert names.index("label-flipping") < names.index("backdoor")
    assert names.index("backdoor") < names.index("model-poisoning")
    assert names.index("model-poisoning") < names.index("across-combiners")
    assert STUDIES["backdoor"] is backdoor.STUDY


# -- scoring and summaries ----------------------------------------------------------------


class LinearApp:
    """An EvaluableApp whose model is a linear classifier: argmax(x @ w)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    @staticmethod
    def predict(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        return np.argmax(x @ params["w"], axis=1)

    def evaluate_on(self, params, x, y):
        return {"accuracy": float(np.mean(self.predict(params, x) == y))}

    def test_data(self):
        return self.x, self.y

    def train_labels(self):
        return self.y


def test_backdoor_success_is_the_attack_success_rate():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.5, (300, 36)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    w = rng.normal(size=(36, 3))
    w[-1, 0] = 40.0  # the trigger's last pixel votes strongly for class 0
    params = {"w": w}
    app = LinearApp(x, y)
    trigger = Backdoor(target=0, size=2)
    expected = attack_success_rate(lambda xs: LinearApp.predict(params, xs), x, y, trigger)
    assert backdoor_success(app, params, trigger) == pytest.approx(expected)
    assert expected > 0.9
    clean = {"w": np.where(np.arange(36)[:, None] == 35, 0.0, w)}
    assert backdoor_success(app, clean, trigger) < 0.6  # without the trigger's weight


def _run(rule: str, seed: int, accuracy: float, per_round: Sequence[float]) -> dict:
    fair = {"mean": 0.8, "worst": 0.5 + seed / 10, "p10": 0.6, "std": 0.1}
    return {
        "partition": "iid",
        "rule": rule,
        "seed": seed,
        "accuracy": accuracy,
        "asr_per_round": list(per_round),
        "honest_clients": fair,
    }


def test_the_summary_averages_seeds_per_setting_and_per_round():
    runs = [
        _run("fedavg", 0, 0.7, [0.1, 0.9]),
        _run("median", 0, 0.6, [0.1, 0.2]),
        _run("fedavg", 1, 0.8, [0.3, 0.7]),
    ]
    rows = summarise(runs, ("partition", "rule"), ("accuracy",), ("asr_per_round",))
    assert [(r["rule"], r["seeds"]) for r in rows] == [("fedavg", 2), ("median", 1)]
    fedavg = rows[0]
    assert fedavg["accuracy"]["mean"] == pytest.approx(0.75)
    assert [s["mean"] for s in fedavg["asr_per_round"]] == pytest.approx([0.2, 0.8])
    assert fedavg["asr_per_round"][0]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert fedavg["honest_clients"]["worst"] == pytest.approx(0.55)


# -- the studies' settings ----------------------------------------------------------------


def _feasible(specs: list[str], clients: int) -> None:
    assert [s.split(":")[0] for s in specs] == [
        "fedavg", "median", "trimmed_mean", "krum", "multikrum", "bulyan", "norm_bounding",
    ]  # fmt: skip
    for spec in specs:
        assert parse_aggregator(spec).rule.min_updates <= clients, spec


def test_every_rule_of_every_study_runs_on_its_clients():
    for size in Size:
        scale = backdoor.SCALES[size]
        _feasible(label_flipping.rules(scale), scale.clients)
        poisoning = model_poisoning.SCALES[size]
        _feasible(model_poisoning.rules(poisoning), poisoning.clients)
        assert model_poisoning.rules(poisoning) == label_flipping.rules(
            label_flipping.SCALES[size]
        )  # the same specs on as many clients
        assert f"scale:factor={poisoning.clients}" in model_poisoning.attacks(poisoning)
        assert f"{backdoor.ATTACK}+scale:factor={poisoning.clients}" in model_poisoning.attacks(
            poisoning
        )
        across = across_combiners.SCALES[size]
        _feasible(across_combiners.rules(across), across.per_combiner)  # at each combiner
    assert "krum:f=1" in across_combiners.rules(across_combiners.SCALES[Size.FULL])
    full = model_poisoning.attacks(model_poisoning.SCALES[Size.FULL])
    assert [a.split(":")[0] for a in full] == ["scale", "backdoor", "sign_flip", "noise"]


def test_placements_put_the_attackers_together_or_spread_in_equal_shares():
    scale = across_combiners.SCALES[Size.FULL]  # 15 clients on 3 combiners
    bad = label_flipping.malicious_clients(scale.fraction, scale.clients, seed=0)
    assert len(bad) == 3
    for how, attacker_combiners in (("one", {0}), ("spread", {0, 1, 2})):
        placed = across_combiners.placement(bad, scale, how)
        assert sorted(placed) == list(range(scale.clients))
        assert Counter(placed.values()) == {0: 5, 1: 5, 2: 5}
        assert {placed[c] for c in bad} == attacker_combiners
    assert across_combiners.placement(bad, scale, "flat") == {}
    with pytest.raises(ConfigError, match="do not fit one combiner"):
        across_combiners.placement(list(range(6)), scale, "one")


def test_a_placement_out_of_range_fails_before_anything_starts():
    with pytest.raises(ConfigError, match="placement 0 -> 3 is out of range"):
        FederationSpec(app=TEST_APP, clients=2, combiners=3, placement={0: 3})
    with pytest.raises(ConfigError, match="placement 5 -> 0"):
        FederationSpec(app=TEST_APP, clients=2, combiners=3, placement={5: 0})


# -- placement in discovery and the rebalancer -------------------------------------------


@pytest.fixture
def discovery(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}").open()
    yield Discovery(store)
    store.close()


def _connect(discovery: Discovery, client_id: str, preferred: str | None) -> str:
    combiner_id = asyncio.run(discovery.assign(client_id, preferred=preferred)).combiner_id
    asyncio.run(discovery.client_event(combiner_id, client_id, connected=True))
    return combiner_id


def test_a_preferred_combiner_is_honoured_only_while_it_has_room(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 3))
    asyncio.run(discovery.register("b", "127.0.0.1:2", 3))
    assert [_connect(discovery, f"c{i}", "a") for i in range(3)] == ["a", "a", "a"]
    assert _connect(discovery, "c3", "a") == "b"  # full: a preference cannot overfill it
    assert _connect(discovery, "c4", "unknown") == "b"  # ignored, not an error
    assert _connect(discovery, "c1", "a") == "a"  # asking again keeps its own place
    a, b = discovery.online()
    assert a.pinned == {"c0", "c1", "c2"} and not b.pinned
    retry = asyncio.run(discovery.assign("c2", "a", preferred="a"))
    assert retry.combiner_id == "b"  # it failed there
    assert not a.pinned and b.pinned == set()  # a went offline; c2 is b's, unplaced


class RecordingMover:
    def __init__(self) -> None:
        self.asked: list[tuple[str, list[str]]] = []

    async def move_clients(self, combiner_id: str, client_ids: Sequence[str]) -> list[str]:
        self.asked.append((combiner_id, list(client_ids)))
        return list(client_ids)


def _rebalance(discovery: Discovery) -> list[tuple[str, list[str]]]:
    for entry in discovery.online():
        asyncio.run(discovery.heartbeat(entry.combiner_id, sorted(entry.clients)))
    mover = RecordingMover()
    asyncio.run(Rebalancer(discovery, mover).step())
    return mover.asked


def test_the_rebalancer_moves_unplaced_clients_and_leaves_placed_ones(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    for client_id in ("u8", "u9"):  # assigned while a was alone, asking for no combiner
        assert _connect(discovery, client_id, None) == "a"
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))
    for i in range(4):
        _connect(discovery, f"p{i}", "a")  # placed: honoured, a has room
    assert _rebalance(discovery) == [("a", ["u9"])]  # only the unplaced are evened


# -- placement in a real federation ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_placed_clients_train_where_they_were_placed_and_never_overfill(tmp_path):
    # Clients 0-3 ask for combiner-0, which takes 3: the first three to arrive train there
    # in every round (the rebalancer, which would even 5 clients to 3 + 2 or better, leaves
    # them), the fourth finds it full and goes to combiner-1, where client 4 asked to be.
    # (An unplaced client 4 could arrive first and take a place on combiner-0, so it is
    # placed too: which clients arrive first is up to the operating system.)
    spec = FederationSpec(
        app=TEST_APP,
        clients=5,
        combiners=2,
        max_clients_per_combiner=3,
        workdir=tmp_path / "fed",
        placement={**dict.fromkeys(range(4), 0), 4: 1},
    )
    with LocalFederation(spec) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(5)
        session, rounds = fed.run_session(SessionConfig(rounds=2, min_clients=5))
        listed = {c.id: c.combiner_id for c in fed.client.clients()}
    assert session.status == "finished", session.reason
    assert len(rounds) == 2
    for record in rounds:
        trained = {o.client_id: o.combiner_id for o in record.outcomes}
        assert trained == listed
    on_zero = {c for c, k in listed.items() if k == "combiner-0"}
    assert len(on_zero) == 3 and on_zero < {f"client-{i}" for i in range(4)}
    assert listed["client-4"] == "combiner-1"


# -- the quick studies end to end ---------------------------------------------------------


def _quick(name: str, tmp_path: Path) -> tuple[dict, str, Path]:
    strata_succeeds("experiment", name, "--quick", "--out", str(tmp_path), timeout=500)
    folder = tmp_path / name
    readme = (folder / "README.md").read_text()
    assert f"strata experiment {name} --quick --seeds 1" in readme
    assert "## How the final model serves the honest clients" in readme
    return json.loads((folder / "results.json").read_text()), readme, folder


def _fair(setting: dict) -> None:
    clients = setting["honest_clients"]
    assert 0.0 <= clients["worst"] <= clients["p10"] <= clients["mean"] <= 1.0, setting


@pytest.mark.slow
@pytest.mark.timeout(900)  # about a minute and a half on 2 idle cores; more on a busy one
@pytest.mark.skipif(not HAS_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
def test_quick_backdoor_end_to_end(tmp_path):
    results, readme, folder = _quick("backdoor", tmp_path)
    scale = backdoor.SCALES[Size.QUICK]
    expected = {
        (p, f, r)
        for p in scale.partitions
        for f in scale.fractions
        for r in label_flipping.rules(scale)
    }
    assert {(s["partition"], s["fraction"], s["rule"]) for s in results["settings"]} == expected
    for setting in results["settings"]:
        assert len(setting["asr_per_round"]) == len(setting["accuracy_per_round"]) == scale.rounds
        assert all(0.0 <= s["mean"] <= 1.0 for s in setting["asr_per_round"]), setting
        assert setting["asr_per_round"][-1] == setting["asr"]  # the last round is the final
        _fair(setting)
    attacked = [r for r in results["runs"] if r["fraction"] > 0]
    assert attacked and all(len(r["malicious"]) == 1 for r in attacked)
    for name in ("asr.png", "accuracy.png"):
        assert (folder / name).stat().st_size > 0
    assert "| `bulyan:f=1` |" in readme


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not HAS_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
def test_quick_model_poisoning_end_to_end(tmp_path):
    results, readme, folder = _quick("model-poisoning", tmp_path)
    scale = model_poisoning.SCALES[Size.QUICK]
    attacks = ["none", *model_poisoning.attacks(scale)]
    assert results["attacks"] == attacks
    got = {(s["partition"], s["attack"], s["rule"]) for s in results["settings"]}
    assert got == {
        (p, a, r) for p in scale.partitions for a in attacks for r in model_poisoning.rules(scale)
    }
    for setting in results["settings"]:
        assert 0.0 <= setting["accuracy"]["mean"] <= 1.0
        assert 0.0 <= setting["asr"]["mean"] <= 1.0
        _fair(setting)
    for run in results["runs"]:
        assert len(run["malicious"]) == (run["attack"] != "none")
    assert (folder / "accuracy.png").stat().st_size > 0
    assert "`scale:factor=7`" in readme
    assert "`backdoor:target=0,fraction=0.5+scale:factor=7`" in readme
    assert "ASR, `backdoor+scale`" in readme


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not HAS_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
def test_quick_across_combiners_end_to_end(tmp_path):
    results, readme, folder = _quick("across-combiners", tmp_path)
    scale = across_combiners.SCALES[Size.QUICK]
    assert len(results["settings"]) == (
        len(scale.partitions) * len(scale.attacks) * len(scale.placements) * 7
    )
    for setting in results["settings"]:
        assert 0.0 <= setting["attack_measure"]["mean"] <= 1.0
        _fair(setting)
    for run in results["runs"]:  # the attackers trained where the placement put them
        where = {run["combiner_of"][f"client-{c}"] for c in run["malicious"]}
        assert where == (
            {"combiner-0"} if run["placement"] == "one" else {"combiner-0", "combiner-1"}
        )
        assert Counter(run["combiner_of"].values()) == dict.fromkeys(
            ("combiner-0", "combiner-1", "combiner-2"), scale.per_combiner
        )
    for name in ("accuracy.png", "attack_measure.png"):
        assert (folder / name).stat().st_size > 0
    assert "clean accuracy / attack success rate" in readme
