"""`strata run --drift-correction scaffold|feddyn` end to end: a controller, 2 combiners and
4 Fashion-MNIST clients (the small subset) as real processes, 2 rounds.

The run finishes with validation and the promise check (both score the model without its
server state); the final model carries non-zero server state (SCAFFOLD's c, FedDyn's h);
and, every client taking part with a fixed example count, that state is exactly the
example-weighted mean of the clients' own state (c_i, g_i), read from their work folders,
though half the clients sit on each combiner.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from stratafl.aggregate.feddyn import split_dynamic
from stratafl.aggregate.scaffold import split_control
from stratafl.aggregate.server_state import state_prefixes
from stratafl.client.scaffold import CONTROL_FILE
from stratafl.modelfile.codec import copy_params_from_file
from tests.support.strata import STRATA

pytestmark = pytest.mark.slow

CLIENTS = 4
METHODS = {
    "scaffold": ([], split_control),
    "feddyn": (["--feddyn-alpha", "0.1"], split_dynamic),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_strata_run_keeps_the_server_state_the_mean_of_the_clients_state(tmp_path, method):
    flags, split = METHODS[method]
    run = tmp_path / "run"
    command = [
        *STRATA,
        "run",
        "--app",
        "stratafl.apps.fashion_mnist:make_small_app",
        "--clients",
        str(CLIENTS),
        "--combiners",
        "2",
        "--rounds",
        "2",
        "--partition",
        "dirichlet:0.5",
        "--min-clients",
        str(CLIENTS),
        "--drift-correction",
        method,
        *flags,
        "--workdir",
        str(run),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["session"]["drift_correction"] == method
    rounds = report["rounds"]
    assert [r["status"] for r in rounds] == ["finished", "finished"]
    assert all(r["accuracy"] is not None and r["accuracy"] > 0.3 for r in rounds)
    assert len(report["model_trail"]) == 4  # the seed, its copy with zero state, two rounds
    assert 0.3 < report["promise"]["federated_accuracy"] <= 1.0

    final = copy_params_from_file(run / "final_model.safetensors")
    model, state = split(final)
    assert set(model) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert all(np.abs(value).max() > 0 for value in state.values())

    examples = {o["client_id"]: o["num_examples"] for o in rounds[-1]["outcomes"]}
    assert sorted(examples) == [f"client-{i}" for i in range(CLIENTS)]
    combiners = {o["combiner_id"] for o in rounds[-1]["outcomes"]}
    assert len(combiners) == 2
    kept = {client: copy_params_from_file(run / client / CONTROL_FILE) for client in examples}
    total = sum(examples.values())
    for name, value in state.items():
        mean = sum(examples[client] * kept[client][name].astype(np.float64) for client in examples)
        np.testing.assert_allclose(value, mean / total, rtol=1e-5, atol=1e-7)
    assert not state_prefixes(kept["client-0"])
