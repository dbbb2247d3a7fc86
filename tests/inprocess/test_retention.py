"""The retention policy: a pure function of the trail's records, and what a pruned model's
download answers."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from stratafl.controller.rest.app import create_api
from stratafl.controller.retention import RetentionPolicy
from stratafl.errors import ConfigError
from stratafl.modelfile.codec import save_params
from stratafl.records import ModelRecord, SessionRecord
from stratafl.status import SessionStatus
from tests.support.controllers import open_controller


def _model(model_id: str, session: str | None, number: int | None, **changes) -> ModelRecord:
    return ModelRecord(
        id=model_id,
        session_id=session,
        round=number,
        size_bytes=1,
        num_parameters=1,
        created_at=float(number or 0),
        **changes,
    )


def _session(
    session_id: str, status: SessionStatus, seed: str, final: str, best: str | None = None
) -> SessionRecord:
    return SessionRecord(
        id=session_id,
        config={},
        status=status,
        seed_model_id=seed,
        final_model_id=final,
        best_model_id=best,
        created_at=0.0,
    )


def _trail(session: str, rounds: int) -> list[ModelRecord]:
    return [_model(f"{session}{n}", session, n) for n in range(1, rounds + 1)]


@pytest.mark.parametrize("status", list(SessionStatus))
def test_a_session_keeps_its_last_models_running_or_ended(status):
    models = [_model("up", None, None), *_trail("a", 6)]
    policy = RetentionPolicy(keep_last=3, keep_every=4)
    assert policy.prunable(models, [_session("a", status, "up", "a6")]) == ["a1", "a2", "a3"]


@pytest.mark.parametrize("status", [SessionStatus.RUNNING, SessionStatus.FINISHED])
def test_a_session_keeps_its_best_model_when_it_is_not_among_its_last(status):
    # A session of 5 whose round 2 scored best: the policy used to delete rounds 1-4 once
    # it ended, the best model with them.
    models = _trail("a", 5)
    sessions = [_session("a", status, "up", "a5", best="a2")]
    assert RetentionPolicy(keep_last=1, keep_every=100).prunable(models, sessions) == [
        "a1",
        "a3",
        "a4",
    ]


def test_seeds_finals_uploads_unknown_sessions_and_pruned_models_are_left_alone():
    models = [
        *_trail("a", 3),
        *_trail("b", 2),
        _model("up", None, None),
        _model("ghost1", "ghost", 1),  # a session the store does not know
        _model("gone", "a", 1, pruned_at=5.0),
    ]
    sessions = [
        _session("a", SessionStatus.FINISHED, "up", "a3"),
        _session("b", SessionStatus.FAILED, "a2", "b2"),  # started from a's round 2
    ]
    policy = RetentionPolicy(keep_last=1, keep_every=100)
    assert policy.prunable(models, sessions) == ["a1", "b1"]


@pytest.mark.parametrize("policy", [RetentionPolicy(keep_last=0), RetentionPolicy(keep_every=0)])
def test_either_setting_at_zero_keeps_every_model(policy):
    models = _trail("a", 30)
    assert policy.prunable(models, [_session("a", SessionStatus.FINISHED, "x", "a30")]) == []
    assert "keeps every model" in policy.describe()


def test_a_negative_setting_is_refused_with_its_name():
    with pytest.raises(ConfigError, match="keep_every=-1"):
        RetentionPolicy(keep_every=-1)


def test_a_pruned_models_download_is_gone_and_names_the_policy(tmp_path):
    retention = RetentionPolicy(keep_last=4, keep_every=7)
    with open_controller(tmp_path, retention=retention) as controller:
        staged = controller.trail.staging_path("seed")
        save_params(staged, {"w": np.zeros(3, np.float32)})
        seed = controller.trail.publish_file(staged, parameters=3).id
        controller.store.mark_pruned([seed])

        async def download() -> httpx.Response:
            transport = httpx.ASGITransport(app=create_api(controller))
            async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
                return await client.get(f"/api/v1/models/{seed}/download")

        answer = asyncio.run(download())
    assert answer.status_code == 410 and answer.json()["error"] == "Gone"
    assert answer.json()["detail"] == (
        f"model {seed} was pruned: the retention policy keeps the last 4 models and the best "
        "model of every session, every 7th round's model, every model a session started or "
        "ended on, and every upload (--keep-last, --keep-every)"
    )
