"""A task's settings, parsed once when the task arrives into one typed value.

A task carries its session's settings as strings and JSON (the proto stays as it is):
the app's config, the update codec and the partial-update choice. The client turns them
into `TaskSettings` once, before it downloads anything, so a setting it cannot honour
fails the task at once with a message, and the rest of the task reads typed fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stratafl.client.app import Config
from stratafl.client.drift import drift_correction_of
from stratafl.compression import (
    Compression,
    PartialUpdates,
    parse_compression,
    parse_partial_updates,
)
from stratafl.errors import ConfigError
from stratafl.proto import stratafl_pb2 as pb
from stratafl.settings import AppRef

__all__ = ["TaskSettings"]


@dataclass(frozen=True, kw_only=True)
class TaskSettings:
    """What one task asks of a client, beyond its model."""

    config: Config
    """The config the app's ``train`` / ``validate`` get."""
    compression: Compression
    """The codec the update travels in."""
    partial: PartialUpdates
    """Which of its tensors the update carries."""
    drift_correction: str
    """none, scaffold or feddyn (`stratafl.client.drift`)."""
    seed: int
    """The round's seed: it draws the tensors a partial update carries."""
    app: AppRef = AppRef()
    """The session's app package (empty: the client's own app)."""

    @classmethod
    def of(cls, task: pb.Task) -> TaskSettings:
        """The settings ``task`` carries; a `ConfigError` naming the one this client cannot
        read."""
        config = _config_of(task)
        try:
            seed = int(config.get("seed", task.round))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"task config seed={config.get('seed')!r} is not an integer") from exc
        return cls(
            config=config,
            compression=parse_compression(task.compression or "none"),
            partial=parse_partial_updates(task.partial_updates),
            drift_correction=drift_correction_of(config),
            seed=seed,
            app=AppRef(task.app.sha256, task.app.entry),
        )


def _config_of(task: pb.Task) -> Mapping[str, Any]:
    try:
        config = json.loads(task.config_json or "{}")
    except ValueError as exc:
        raise ConfigError(f"task {task.task_id}'s config is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"task {task.task_id}'s config is not a JSON object")
    return config
