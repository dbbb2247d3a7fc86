"""A session's round settings travel typed and are parsed once per tier: SessionConfig ->
RoundSettings -> RoundSpec.settings on the wire -> the same typed value at the combiner, and a
bad value fails the round with one line that names the fix, before anything is fetched."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from stratafl.aggregate import parse_aggregator
from stratafl.combiner import runner as combiner_runner
from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry
from stratafl.combiner.rounds import settings_of
from stratafl.combiner.runner import CombinerRoundRunner
from stratafl.compression import Codec, Compression, PartialUpdates
from stratafl.controller.link import RoundTask, round_spec
from stratafl.errors import ConfigError
from stratafl.modelfile.codec import MappedModelFile, save_params
from stratafl.proto import stratafl_pb2 as pb
from stratafl.security.receipts import ReceiptKeys
from stratafl.settings import RoundSettings, SessionConfig
from stratafl.status import TaskKind
from stratafl.transport.streams import file_chunks, header_to_proto, send_model
from tests.support.inprocess import aiter_of

CONFIGS = [
    SessionConfig(
        aggregator=" Trimmed_Mean:beta=0.1 + FedAdam:server_lr=0.01",
        compression="TopK:fraction=.01",
        max_examples_per_client=5_000,
        min_clients=2,
    ),
    SessionConfig(aggregator="fedavg+fedyogi", partial_updates="random:fraction=0.25"),
    SessionConfig(compression="int8"),
    SessionConfig(),
]


def _over_the_wire(config: SessionConfig) -> pb.RoundSpec:
    task = RoundTask(
        session_id="s",
        number=1,
        kind=TaskKind.TRAIN,
        model_id="m",
        timeout=1.0,
        settings=config.round_settings(),
    )
    return pb.RoundSpec.FromString(round_spec(task, [], ReceiptKeys.generate()).SerializeToString())


@pytest.mark.parametrize("config", CONFIGS, ids=["robust-topk", "partial", "int8", "defaults"])
def test_a_sessions_settings_reach_the_combiner_as_the_same_typed_value(config):
    sent = config.round_settings()
    got = settings_of(_over_the_wire(config))
    assert got == sent
    assert got.aggregator == parse_aggregator(config.aggregator)
    assert str(got.compression) == config.compression
    assert str(got.partial_updates) == config.partial_updates
    assert got.max_examples_per_client == config.max_examples_per_client


def test_the_settings_are_typed_values_not_text():
    got = settings_of(_over_the_wire(CONFIGS[0]))
    assert got.compression == Compression(Codec.TOPK, 0.01)
    assert got.partial_updates == PartialUpdates()
    assert got.aggregator.rule.name == "trimmed_mean"
    assert got.aggregator.optimizer_spec.startswith("fedadam")
    partial = settings_of(_over_the_wire(CONFIGS[1])).partial_updates
    assert partial == PartialUpdates(random=True, fraction=0.25)


def test_an_empty_settings_group_is_every_default():
    assert settings_of(pb.RoundSpec()) == RoundSettings()
    assert RoundSettings().aggregator.spec == "fedavg"


BAD = [
    (pb.RoundSettings(compression="zip"), "unknown compression 'zip'; use none, float16"),
    (pb.RoundSettings(partial_updates="layers"), "unknown partial_updates 'layers'; use none"),
    (pb.RoundSettings(aggregator="average"), "unknown aggregator 'average'; valid rules"),
    (pb.RoundSettings(max_examples_per_client=-1), "out of range; use 0 \\(no cap\\)"),
    (
        pb.RoundSettings(aggregator="median", partial_updates="random:fraction=0.5"),
        "use aggregator 'fedavg'.* or partial_updates 'none'",
    ),
]


@pytest.mark.parametrize(
    ("settings", "says"), BAD, ids=["codec", "partial", "rule", "cap", "partial-median"]
)
def test_a_bad_setting_fails_the_round_in_one_line_before_anything_is_fetched(
    tmp_path: Path, settings: pb.RoundSettings, says: str
):
    def download(model_id: str):
        raise AssertionError("a round with bad settings must not fetch the model")

    registry = ClientRegistry(10, on_change=lambda client_id, connected: None)
    runner = CombinerRoundRunner(
        "k", registry, ModelCache(tmp_path / "cache", download), tmp_path / "updates"
    )
    spec = pb.RoundSpec(round=1, kind=pb.TRAIN, model_id="m", settings=settings)
    with pytest.raises(ConfigError, match=says) as raised:
        asyncio.run(runner.run(spec))
    assert "\n" not in str(raised.value)


def test_a_round_maps_its_reference_once(tmp_path: Path, monkeypatch):
    """The rule and the update decoder share one mapping of the round's global model."""
    save_params(tmp_path / "global.safetensors", {"w": np.zeros(4, np.float32)})

    def download(model_id: str):
        specs, data = file_chunks(tmp_path / "global.safetensors")
        return aiter_of(send_model(pb.ModelChunk, header_to_proto(model_id, specs), data))

    maps: list[Path] = []

    class CountingMap(MappedModelFile):
        def __init__(self, path: Path) -> None:
            maps.append(path)
            super().__init__(path)

    monkeypatch.setattr(combiner_runner, "MappedModelFile", CountingMap)
    registry = ClientRegistry(10, on_change=lambda client_id, connected: None)
    runner = CombinerRoundRunner(
        "k", registry, ModelCache(tmp_path / "cache", download), tmp_path / "updates"
    )
    spec = pb.RoundSpec(
        round=1,
        kind=pb.TRAIN,
        model_id="m",
        timeout_seconds=1.0,
        settings=pb.RoundSettings(compression="int8"),
    )
    result = asyncio.run(runner.run(spec))  # no client: the round ends at once, empty
    assert result.header.contributors == 0
    assert len(maps) == 1
