"""A task's settings are read once into a typed value, and a setting the client cannot
honour is refused with the fix."""

from __future__ import annotations

import json

import pytest

from stratafl.client.task_settings import TaskSettings
from stratafl.compression import Codec, Compression, PartialUpdates
from stratafl.errors import ConfigError
from stratafl.proto import stratafl_pb2 as pb


def _task(**fields: object) -> pb.Task:
    return pb.Task(task_id="t1", model_id="m", round=7, **fields)  # type: ignore[arg-type]


def test_a_task_without_settings_trains_plainly_with_the_round_as_its_seed() -> None:
    settings = TaskSettings.of(_task())
    assert settings.config == {}
    assert settings.compression == Compression()
    assert settings.partial == PartialUpdates()
    assert settings.drift_correction == "none"
    assert settings.seed == 7


def test_a_task_settings_are_typed_values() -> None:
    config = {"seed": 11, "drift_correction": "feddyn", "feddyn_alpha": 0.1, "lr": 0.5}
    task = _task(
        config_json=json.dumps(config),
        compression="topk:fraction=0.1",
        partial_updates="random:fraction=0.5",
    )
    settings = TaskSettings.of(task)
    assert settings.config == config
    assert settings.compression == Compression(Codec.TOPK, 0.1)
    assert settings.partial == PartialUpdates(random=True, fraction=0.5)
    assert settings.drift_correction == "feddyn"
    assert settings.seed == 11


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"config_json": "{not json"}, "not JSON"),
        ({"config_json": "[1, 2]"}, "not a JSON object"),
        ({"config_json": '{"seed": "soon"}'}, "seed='soon' is not an integer"),
        ({"config_json": '{"drift_correction": "scafold"}'}, "upgrade the client"),
        ({"compression": "zip"}, "unknown compression"),
        ({"partial_updates": "half"}, "unknown partial_updates"),
    ],
)
def test_a_setting_the_client_cannot_honour_is_refused(fields: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        TaskSettings.of(_task(**fields))
