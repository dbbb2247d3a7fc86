"""Each tier's typed options survive the trip through JSON that the launcher sends them on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stratafl.client.main import ClientOptions
from stratafl.combiner.main import CombinerOptions
from stratafl.controller.main import ControllerOptions
from stratafl.errors import ConfigError
from stratafl.launch.tier import (
    TierKind,
    kind_of,
    options_from_json,
    options_to_json,
    ready_file_of,
    tier_command,
)

OPTIONS = [
    ControllerOptions(
        workdir=Path("/tmp/w/controller"),
        http_port=0,
        grpc_port=5051,
        database_url="postgresql+psycopg://u@127.0.0.1:5432/db",
        ready_file=Path("/tmp/w/ready/controller.ready"),
    ),
    ControllerOptions(),
    CombinerOptions(
        controller="http://127.0.0.1:8080",
        workdir=Path("/tmp/w/combiner-0"),
        max_clients=7,
        combiner_id="combiner-0",
        ready_file=Path("/tmp/w/ready/combiner-0.ready"),
    ),
    ClientOptions(
        controller="http://127.0.0.1:8080",
        app="stratafl.apps.fashion_mnist:make_app",
        client_id="client-3",
        partition_id=3,
        num_partitions=10,
        partitioner="dirichlet:0.5",
        seed=4,
    ),
    ClientOptions(controller="http://127.0.0.1:8080", app="app.py:make_app"),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: type(o).__name__)
def test_options_round_trip_through_json(options):
    kind = kind_of(options)
    back = options_from_json(kind, options_to_json(options))
    assert back == options and type(back) is type(options)
    command = tier_command(options)
    assert command[:5] == [sys.executable, "-m", "stratafl.launch.tier", kind, command[4]]
    assert options_from_json(TierKind(command[3]), command[4]) == options


def test_each_kind_has_its_options_and_clients_have_no_ready_file():
    assert [kind_of(o) for o in OPTIONS] == ["controller", "controller", "combiner"] + [
        "client"
    ] * 2
    assert ready_file_of(OPTIONS[0]) == Path("/tmp/w/ready/controller.ready")
    assert ready_file_of(OPTIONS[3]) is None


def test_options_that_do_not_fit_are_a_config_error():
    with pytest.raises(ConfigError, match="not valid combiner options"):
        options_from_json(TierKind.COMBINER, '{"controller": "http://x"}')  # no workdir
    with pytest.raises(ConfigError, match="not valid controller options"):
        options_from_json(TierKind.CONTROLLER, '{"http_port": "eighty"}')
    with pytest.raises(ConfigError, match="client options have no field clientid"):
        options_from_json(TierKind.CLIENT, '{"controller": "x", "app": "m:f", "clientid": 1}')


def test_the_tier_module_refuses_an_unknown_kind():
    done = subprocess.run(
        [sys.executable, "-m", "stratafl.launch.tier", "reducer", "{}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "usage: python -m stratafl.launch.tier {controller, combiner, client}" in done.stderr
