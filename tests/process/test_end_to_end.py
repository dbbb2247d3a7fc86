"""`strata run` end to end on real Fashion-MNIST: a controller, 2 combiners and 6 clients as
real processes, 3 rounds; accuracy rises, the trail holds 4 models, the report is whole."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.strata import STRATA

pytestmark = pytest.mark.slow


def test_strata_run_on_fashion_mnist_writes_a_complete_report(tmp_path):
    report_path = tmp_path / "report.json"
    command = [
        *STRATA,
        "run",
        "--app",
        "stratafl.apps.fashion_mnist:make_app",
        "--clients",
        "6",
        "--combiners",
        "2",
        "--rounds",
        "3",
        "--partition",
        "dirichlet:0.5",
        "--seed",
        "0",
        "--min-clients",
        "6",
        "--report",
        str(report_path),
        "--workdir",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())

    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["status"] == "finished" for r in rounds)
    assert rounds[-1]["accuracy"] > rounds[0]["accuracy"]
    assert rounds[-1]["accuracy"] > 0.6
    for r in rounds:
        assert sorted(r["participants"]) == [f"client-{i}" for i in range(6)]
        assert set(r["per_client"]) == {f"client-{i}" for i in range(6)}
        assert all({"accuracy", "loss"} <= set(m) for m in r["per_client"].values())
        assert r["loss"] > 0 and r["duration"] > 0
        assert r["bytes_up"] > 6 * 400_000 and r["bytes_down"] > 6 * 400_000  # 101,770 floats
    assert len(report["model_trail"]) == 4
    assert report["model_trail"][-1] == report["final_model"]

    promise = report["promise"]
    assert promise["epochs_budget"] == 3
    assert len(promise["client_alone"]) == 6
    assert promise["federated_accuracy"] == pytest.approx(rounds[-1]["accuracy"], abs=0.02)
    assert promise["federated_accuracy"] > promise["client_alone_mean"]
    assert 0.6 < promise["centralized_accuracy"] <= 1.0
    assert "The promise check" in done.stdout
    # Every process the launcher started is gone.
    ps = subprocess.run(["pgrep", "-f", str(tmp_path / "run")], capture_output=True, text=True)
    assert ps.stdout.strip() == ""
