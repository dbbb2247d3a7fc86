"""A real federation whose models live in S3 (a local moto server): the controller writes
every model there, combiners fetch them from it over gRPC, and the final model is
downloadable over REST; nothing lands in the controller's work folder."""

from __future__ import annotations

import numpy as np
import pytest

from stratafl.modelfile.codec import copy_params_from_file
from stratafl.settings import SessionConfig
from stratafl.store.models import ModelStore
from stratafl.transport.streams import CHUNK_BYTES

pytestmark = pytest.mark.slow

PARAMETERS = 1_200_000
"""4.8 MB of float32: every model crosses the 1 MiB chunk size, on every link."""


def test_two_rounds_with_the_models_in_s3(federation, s3_store, tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_TEST_PARAMS", str(PARAMETERS))
    assert PARAMETERS * 4 > CHUNK_BYTES
    with federation(clients=2, combiners=1, model_store=s3_store) as fed:
        seed = fed.upload_seed_model()
        fed.wait_for_clients(2)
        session, rounds = fed.run_session(SessionConfig(rounds=2, min_clients=2))
        assert session.status == "finished", session.reason
        assert [r.status for r in rounds] == ["finished", "finished"]
        assert session.final_model_id is not None
        trail = fed.client.trail(session.final_model_id)
        assert [m.id for m in trail][-1] == seed.id and len(trail) == 3
        downloaded = fed.client.download_model(
            session.final_model_id, tmp_path / "final.safetensors"
        )
    # each round adds FedAvg of the shifts 1 (10 examples) and 2 (20 examples): 5/3
    params = copy_params_from_file(downloaded)
    np.testing.assert_allclose(params["w"], np.full(PARAMETERS, 10 / 3), rtol=1e-6)
    store = ModelStore(s3_store)
    kept = {model.id for model in trail if model.pruned_at is None}  # retention may prune
    assert {seed.id, session.final_model_id} <= kept
    assert all(store.exists(model_id) for model_id in kept)
    with store.open(session.final_model_id) as stream:
        assert stream.read() == downloaded.read_bytes()
    assert not (tmp_path / "fed" / "controller" / "models").exists()
