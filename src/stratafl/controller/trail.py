"""The model trail: every global model, stored with its parent and its optimiser state.

Publishing is ordered so that a crash at any point leaves no dangling id: the optimiser
state is stored first, then the model file, and only then is the model listed in the state
store. A listed model is therefore always complete, and always has its state beside it.
The trail also applies the retention policy (`controller.retention`): a pruned model
keeps its row, marked, so the trail never has a gap, but loses its files.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from stratafl.aggregate import Aggregator, ServerOptState
from stratafl.aggregate.server_state import model_part, state_prefixes, with_zero_state
from stratafl.controller.retention import RetentionPolicy
from stratafl.modelfile.codec import copy_params_from_stream, save_params
from stratafl.modelfile.header import read_header
from stratafl.params import Params, TensorSpec, num_parameters
from stratafl.records import ModelRecord
from stratafl.store.models import ModelStore, new_model_id
from stratafl.store.state import StateStore


class ModelTrail:
    """Publishes and loads global models; constructing it does no I/O."""

    def __init__(
        self,
        store: StateStore,
        models: ModelStore,
        staging: Path,
        retention: RetentionPolicy | None = None,
    ) -> None:
        self._store = store
        self._models = models
        self._staging = staging
        self.retention = retention or RetentionPolicy()

    def staging_path(self, name: str) -> Path:
        """A file name in the staging folder (created on first use)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging / f"{name}.safetensors"

    def publish_file(
        self,
        staged: Path,
        *,
        parameters: int,
        parent_id: str | None = None,
        session_id: str | None = None,
        round_number: int | None = None,
        model_id: str | None = None,
    ) -> ModelRecord:
        """Move a complete model file into the store and list it; ``staged`` is consumed."""
        model_id = model_id or new_model_id()
        try:
            self._models.put_file(model_id, staged)
        finally:
            staged.unlink(missing_ok=True)
        return self._store.add_model(
            model_id,
            parent_id=parent_id,
            session_id=session_id,
            round_number=round_number,
            size_bytes=self._models.size(model_id),
            num_parameters=parameters,
        )

    async def publish(
        self,
        params: Mapping[str, np.ndarray],
        *,
        parent_id: str,
        session_id: str,
        round_number: int,
        aggregator: Aggregator,
        state: ServerOptState,
    ) -> ModelRecord:
        """Store a round's new model and the optimiser state that produced it."""
        model_id = new_model_id()
        staged = self.staging_path(model_id)
        await asyncio.to_thread(save_params, staged, params, {"parent": parent_id})
        await asyncio.to_thread(self._save_optimizer_state, model_id, aggregator, state)
        return await asyncio.to_thread(
            self.publish_file,
            staged,
            parameters=num_parameters(params),
            parent_id=parent_id,
            session_id=session_id,
            round_number=round_number,
            model_id=model_id,
        )

    async def start_copy(
        self,
        model_id: str,
        *,
        state_prefix: str | None,
        session_id: str,
        aggregator: Aggregator,
        state: ServerOptState,
    ) -> ModelRecord | None:
        """A copy of ``model_id`` fit for a session whose drift correction keeps server
        state under ``state_prefix`` (zero state added, any other dropped) or keeps none
        (None: all server state dropped), stored as the session's round 0 with ``state``;
        None when ``model_id`` is fit as it is (reads its header only)."""
        names = [spec.name for spec in await asyncio.to_thread(self.layout, model_id)]
        wanted = set() if state_prefix is None else {state_prefix}
        if state_prefixes(names) == wanted:
            return None
        params = await self.load(model_id)
        return await self.publish(
            model_part(params) if state_prefix is None else with_zero_state(params, state_prefix),
            parent_id=model_id,
            session_id=session_id,
            round_number=0,
            aggregator=aggregator,
            state=state,
        )

    async def load(self, model_id: str) -> Params:
        """A stored model's arrays, read off the event loop."""

        def read() -> Params:
            with self._models.open(model_id) as stream:
                return copy_params_from_stream(stream)[0]

        return await asyncio.to_thread(read)

    def layout(self, model_id: str) -> list[TensorSpec]:
        """A stored model's tensor names, dtypes and shapes (reads its header only)."""
        with self._models.open(model_id) as stream:
            return read_header(stream)[0]

    def optimizer_state(self, model_id: str, aggregator: Aggregator) -> ServerOptState:
        """The state saved with ``model_id`` by the same optimiser, else a fresh one.

        Saved with every model a session makes, so a session that continues from a model
        (after a controller restart, say) picks up m, v and t where they were.
        """
        state_id = f"{model_id}-optimizer"
        if not self._models.exists(state_id):
            return ServerOptState()
        with self._models.open(state_id) as stream:
            arrays, metadata = copy_params_from_stream(stream)
        if metadata.get("optimizer") != aggregator.optimizer_spec:
            return ServerOptState()
        return ServerOptState.from_arrays(arrays)

    def _save_optimizer_state(
        self, model_id: str, aggregator: Aggregator, state: ServerOptState
    ) -> None:
        if not aggregator.has_optimizer_state:
            return  # plain averaging has no state worth keeping
        staged = self.staging_path(f"{model_id}-optimizer")
        save_params(staged, state.to_arrays(), {"optimizer": aggregator.optimizer_spec})
        try:
            self._models.put_file(f"{model_id}-optimizer", staged)
        finally:
            staged.unlink(missing_ok=True)

    def prune(self) -> list[str]:
        """Apply the retention policy; returns the ids of the models it pruned.

        Rows are marked before files are deleted: a crash in between leaves a file too
        many, never a listed model that is not marked and has no file.
        """
        doomed = self.retention.prunable(self._store.models(), self._store.sessions())
        self._store.mark_pruned(doomed)
        for model_id in doomed:
            self._models.delete(model_id)
            self._models.delete(f"{model_id}-optimizer")
        return doomed

    def discard(self, model_id: str) -> None:
        """Unlist a model no progress refers to, then delete its files (see `prune` for why
        in this order); `StateStore.delete_model` refuses a model something refers to."""
        self._store.delete_model(model_id)
        self._models.delete(model_id)
        self._models.delete(f"{model_id}-optimizer")

    def sweep_unowned(self) -> list[str]:
        """Delete files of the model store that no listed, unpruned model owns: what a
        controller killed between storing a model's files and listing it, or between
        marking a model pruned and deleting its files, left behind. Only before any writer.
        """
        owned = {m.id for m in self._store.models() if m.pruned_at is None}
        unowned = [i for i in self._models.ids() if i.removesuffix("-optimizer") not in owned]
        for file_id in unowned:
            self._models.delete(file_id)
        return unowned

    def clear_staging(self) -> None:
        """Delete what a stopped controller left half-written: staged models, partials and
        uploads, and ``*.partial`` copies in the model store. Only before anything writes."""
        if self._staging.exists():
            shutil.rmtree(self._staging)
        self._models.discard_partials()
