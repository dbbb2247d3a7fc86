"""FLAME and RLR through the real tiers (processes on loopback), one combiner.

The test app's client i adds i + 1 to every weight (examples 10 (i + 1)); client-4's
shift is boosted to 500. All updates point the same way, so FLAME admits every one and only
its clipping acts; every sign agrees, so RLR takes FedAvg's step.
"""

from __future__ import annotations

import numpy as np
import pytest

from stratafl.modelfile.codec import copy_params_from_file
from stratafl.settings import SessionConfig

pytestmark = pytest.mark.slow


def test_flame_clips_a_boosted_update_and_rlr_folds_in_the_tiers(federation, monkeypatch):
    monkeypatch.setenv("STRATA_TEST_BOOST", "client-4")
    with federation(clients=5, combiners=1) as fed:
        seed = fed.upload_seed_model()
        fed.wait_for_clients(5)

        def final_w(aggregator: str) -> np.ndarray:
            config = SessionConfig(
                rounds=1, min_clients=5, aggregator=aggregator, seed_model_id=seed.id
            )
            session, _ = fed.run_session(config)
            assert session.status == "finished", session.reason
            path = fed.workdir / "controller" / "models" / f"{session.final_model_id}.safetensors"
            return copy_params_from_file(path)["w"]

        # shifts 1, 2, 3, 4, 500: S = the median norm (shift 3); clipped 1, 2, 3, 3, 3
        np.testing.assert_allclose(final_w("flame:noise_lambda=0"), 2.4, rtol=1e-6)
        # unanimous signs with theta = n: FedAvg, (10 + 40 + 90 + 160 + 25000) / 150
        np.testing.assert_allclose(final_w("rlr:theta=5"), 25300 / 150, rtol=1e-6)
