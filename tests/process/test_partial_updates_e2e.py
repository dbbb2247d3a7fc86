"""Partial updates over real processes on loopback (a controller, 2 combiners, 4 clients):
a session where each client sends half of its tensors finishes, moves fewer bytes than the
same session with full updates, and every round's model is the per-tensor weighted mean,
recomputed here from the tensors each client drew."""

from __future__ import annotations

import numpy as np
import pytest

from stratafl.compression import parse_partial_updates
from stratafl.settings import SessionConfig

pytestmark = pytest.mark.slow

CLIENTS = 4
HALF = "random:fraction=0.5"


def _expected(model, outcomes, round_seed: int):
    """The test app's client adds ``shift`` to every weight, with 10 * shift examples; each
    tensor takes the weighted mean of the clients that sent it, or stays as it was."""
    choice = parse_partial_updates(HALF)
    drawn = {
        o.client_id: choice.choose(list(model), seed=round_seed, client_id=o.client_id)
        for o in outcomes
    }
    new = {}
    for name, value in model.items():
        sent = [o for o in outcomes if name in drawn[o.client_id]]
        if not sent:
            new[name] = value
            continue
        trained = [(value + np.float32(o.metrics["shift"])).astype(np.float64) for o in sent]
        mean = np.average(np.stack(trained), axis=0, weights=[o.num_examples for o in sent])
        new[name] = mean.astype(value.dtype)
    return new


def test_a_partial_session_moves_fewer_bytes_and_gives_the_per_tensor_mean(federation):
    with federation(clients=CLIENTS, combiners=2) as fed:
        seed = fed.upload_seed_model()
        fed.wait_for_clients(CLIENTS)
        # weight_cap_ratio 4: two clients a combiner (10 and 40 examples at worst) keep
        # their whole weights under round 1's median cap, so `_expected` weighs by claims
        settings = dict(
            rounds=2,
            min_clients=CLIENTS,
            seed_model_id=seed.id,
            validate_each_round=False,
            weight_cap_ratio=4,
        )
        full, full_rounds = fed.run_session(SessionConfig(**settings))
        config = SessionConfig(**settings, partial_updates=HALF)
        session, rounds = fed.run_session(config)
        assert full.status == "finished", full.reason
        assert session.status == "finished", session.reason
        assert [r.status for r in rounds] == ["finished", "finished"]

        expected = fed.client.download_params(seed.id)
        for record in rounds:  # (the first round's model itself is pruned: recompute it)
            ok = [o for o in record.outcomes if o.status == "ok"]
            assert len(ok) == CLIENTS, record.outcomes
            assert len({o.combiner_id for o in ok}) == 2  # two partials merged per round
            expected = _expected(expected, ok, config.round_seed(record.number))
        final = fed.client.download_params(session.final_model_id or "")
        for name, value in expected.items():
            np.testing.assert_allclose(final[name], value, rtol=1e-6, err_msg=name)

        # every update holds one of the app's two tensors: each costs less than a full one
        up = [sum(r.traffic.clients_up for r in rs) for rs in (full_rounds, rounds)]
        assert up[1] < up[0], up
        assert sum(r.traffic.moved for r in rounds) < sum(r.traffic.moved for r in full_rounds)
        assert [r.traffic.updates_raw for r in rounds] == [
            r.traffic.updates_raw for r in full_rounds
        ]
