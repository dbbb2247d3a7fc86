"""A controller killed between storing a model's files and listing it, or between marking a
model pruned and deleting its files, leaves files nothing owns; the next start sweeps them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from stratafl.controller.recovery import recover
from stratafl.controller.wiring import Controller
from stratafl.modelfile.codec import save_params
from stratafl.settings import SessionConfig
from tests.support.controllers import open_controller


def _stored(controller: Controller, folder: Path, name: str, **listing: object) -> str:
    staged = folder / f"{name}.tmp"
    save_params(staged, {"w": np.ones(4, np.float32)})
    if listing:
        return controller.trail.publish_file(staged, parameters=4, model_id=name, **listing).id
    controller.models.put_file(name, staged)  # stored, never listed: the kill came first
    staged.unlink()
    return name


async def _crash_then_restart(workdir: Path) -> list[str]:
    with open_controller(workdir) as first:
        seed = _stored(first, workdir, "seed", parent_id=None)
        first.store.create_session("s1", SessionConfig(rounds=3).model_dump(), seed)
        _stored(first, workdir, "crashed-optimizer")
        _stored(first, workdir, "crashed")
        _stored(first, workdir, "round1", parent_id=seed, session_id="s1", round_number=1)
        _stored(first, workdir, "round2", parent_id="round1", session_id="s1", round_number=2)
        first.store.update_session("s1", rounds_done=2, final_model_id="round2")
        first.store.mark_pruned(["round1"])  # the kill came before its file was deleted

    with open_controller(workdir) as second:
        recover(second.store, second.trail, second.sessions)
        assert second.sessions.current is not None
        second.sessions.current.cancel()
        return [e.message for e in second.store.events() if e.kind == "model_file_swept"]


def test_files_no_listed_model_owns_are_swept_at_start(tmp_path: Path) -> None:
    swept = asyncio.run(_crash_then_restart(tmp_path))
    left = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert left == ["round2.safetensors", "seed.safetensors"]
    assert len(swept) == 3 and all("no listed model owns it" in m for m in swept)
