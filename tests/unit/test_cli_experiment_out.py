"""`strata experiment` writes into a new work folder of its own unless told otherwise, never
into docs/results under whatever directory it was started in."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratafl.cli.experiment import _study_run


def test_results_go_to_a_new_work_folder_by_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = _study_run(quick=True, seeds=None, app=None, out=None)
    first.folder("heterogeneity")  # the study makes its folder as it starts
    second = _study_run(quick=True, seeds=None, app=None, out=None)
    assert first.out.parent == tmp_path and first.out.name.startswith("strata-experiment-")
    assert second.out != first.out  # a second run in the same second gets its own
    assert not (tmp_path / "docs").exists()


@pytest.mark.parametrize("given", ["docs/results", "elsewhere"])
def test_out_is_taken_as_given(tmp_path: Path, monkeypatch, given: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert _study_run(quick=False, seeds=2, app=None, out=Path(given)).out == Path(given)
