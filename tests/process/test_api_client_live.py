"""`ControllerClient` end to end against a real controller process (started from its typed
options, as the launcher does)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stratafl import errors
from stratafl.controller.main import ControllerOptions
from stratafl.launch.processes import ProcessGroup
from stratafl.restapi import ControllerClient
from stratafl.security import Role
from stratafl.settings import SessionConfig

pytestmark = pytest.mark.slow


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ControllerClient]:
    group = ProcessGroup(tmp_path)
    options = ControllerOptions(
        workdir=tmp_path / "controller",
        http_port=0,
        ready_file=group.ready_file("controller"),
    )
    try:
        info = json.loads(group.start("controller", options).wait_ready())
        admin = Path(info["admin_token_file"]).read_text()
        with ControllerClient(
            info["url"], timeout=30, token=admin, verify=info["ca_file"]
        ) as client:
            assert client.discovery().grpc_address == info["grpc_address"]
            yield client
    finally:
        group.stop_all()


def test_models_sessions_and_errors_against_a_real_controller(api, tmp_path):
    assert api.health().status == "ok"
    params = {"w": np.arange(10, dtype=np.float32)}
    seed = api.upload_model(params)
    assert seed.num_parameters == 10 and seed.parent_id is None
    assert [m.id for m in api.models()] == [seed.id] == [m.id for m in api.trail(seed.id)]
    assert api.model(seed.id) == seed
    np.testing.assert_array_equal(api.download_params(seed.id)["w"], params["w"])
    assert api.download_model(seed.id, tmp_path / "seed.safetensors").stat().st_size > 40

    with pytest.raises(errors.NotFoundError, match="nope"):
        api.model("nope")
    with pytest.raises(errors.PermissionDenied):  # an admin is not a client
        api.assign("client-0")
    issued = api.create_token("client-0", Role.CLIENT)
    as_client = ControllerClient(api.url, token=issued.token, verify=False, timeout=30)
    with as_client, pytest.raises(errors.UnavailableError):  # no combiner has registered
        as_client.assign("client-0")
    assert api.combiners() == []

    # No client ever connects: the session's first round fails, and says why.
    config = SessionConfig(rounds=1, wait_for_clients_seconds=0, max_failed_rounds=0)
    session = api.start_session(config)
    assert session.seed_model_id == seed.id
    assert [s.id for s in api.sessions()] == [session.id]
    deadline = time.monotonic() + 30
    while api.session(session.id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    ended = api.session(session.id)
    assert ended.status == "failed" and ended.reason
    assert [r.status for r in api.rounds(session.id)] in ([], ["failed"])
    assert any(e.kind.startswith("session") for e in api.events())


def test_a_stopped_controller_is_unavailable():
    with ControllerClient("http://127.0.0.1:9", timeout=2) as api:
        with pytest.raises(errors.UnavailableError, match="is `strata controller start` running"):
            api.health()
