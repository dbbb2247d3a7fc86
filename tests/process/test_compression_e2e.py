"""Every codec over real processes on loopback: a session of 2 rounds each, fewer bytes up
than raw, the same raw size accounted, the model FedAvg would give (within the codec's
precision), and top-k's residuals kept in each client's work folder."""

from __future__ import annotations

import numpy as np
import pytest

from stratafl.client.feedback import RESIDUALS_FILE
from stratafl.settings import SessionConfig

pytestmark = pytest.mark.slow

CLIENTS = 3
EXACT = 140 / 60  # client i adds i+1 with 10(i+1) examples: sum (i+1)^2 / sum (i+1) * 10/10


def test_each_codec_completes_two_rounds_with_fewer_bytes_up_than_none(federation):
    with federation(clients=CLIENTS, combiners=1) as fed:
        seed = fed.upload_seed_model()
        fed.wait_for_clients(CLIENTS)
        up: dict[str, int] = {}
        for codec in ("none", "float16", "int8", "topk:fraction=0.1"):
            config = SessionConfig(
                rounds=2, min_clients=CLIENTS, compression=codec, seed_model_id=seed.id
            )
            session, rounds = fed.run_session(config)
            assert session.status == "finished", (codec, session.reason)
            assert [r.status for r in rounds] == ["finished", "finished"], codec
            traffic = rounds[0].traffic
            assert traffic.model_bytes == 1003 * 4
            assert traffic.updates_raw == CLIENTS * traffic.model_bytes
            up[codec] = sum(r.traffic.clients_up for r in rounds)
            params = fed.client.download_params(session.final_model_id or "")
            if codec != "topk:fraction=0.1":  # top-k sends a tenth of each update a round
                np.testing.assert_allclose(params["w"], 2 * EXACT, rtol=2e-3)
        for codec in ("float16", "int8", "topk:fraction=0.1"):
            assert up[codec] < up["none"], up
        assert up["int8"] < up["float16"]
        for index in range(CLIENTS):
            assert (fed.workdir / f"client-{index}" / RESIDUALS_FILE).exists()
