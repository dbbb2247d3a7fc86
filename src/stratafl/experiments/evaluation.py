"""Scoring a final model beyond what `validate` reports: class recall and per-client mixes.

A study that needs more than accuracy asks the app, loaded for the pooled data (one
partition), for its test data and for scores on any labelled data: `EvaluableApp`. The
Fashion-MNIST app offers it; an app that does not is refused with what to add.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from stratafl.client.app import ClientContext, load_app
from stratafl.data import partition
from stratafl.errors import ConfigError
from stratafl.params import Params


@runtime_checkable
class EvaluableApp(Protocol):
    """What a study needs of an app beyond `ClientApp` (see stratafl.apps.fashion_mnist)."""

    def evaluate_on(self, params: Params, x: np.ndarray, y: np.ndarray) -> Mapping[str, float]:
        """``{"accuracy": ...}`` (and more) of ``params`` on the labelled data ``(x, y)``."""
        ...

    def test_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The test examples the app validates on."""
        ...

    def train_labels(self) -> np.ndarray:
        """The labels of the app's training examples."""
        ...


def pooled_app(app_spec: str, seed: int, study: str) -> EvaluableApp:
    """``app_spec`` loaded for the whole dataset, as the promise check's pooled baseline."""
    app = load_app(app_spec, ClientContext(client_id="pooled", num_partitions=1, seed=seed))
    if not isinstance(app, EvaluableApp):
        raise ConfigError(
            f"{study} scores the final model per class, but {app_spec} lacks "
            "evaluate_on(params, x, y), test_data() and train_labels(); add them "
            "(see stratafl.apps.fashion_mnist)"
        )
    return app


def class_recalls(app: EvaluableApp, params: Params, classes: int) -> list[float]:
    """Per class, the fraction of its test examples that ``params`` classifies right."""
    x, y = app.test_data()
    recalls = []
    for c in range(classes):
        members = y == c
        recalls.append(
            float(app.evaluate_on(params, x[members], y[members])["accuracy"])
            if members.any()
            else float("nan")
        )
    return recalls


def label_mixes(labels: np.ndarray, spec: str, clients: int, seed: int, classes: int) -> np.ndarray:
    """(clients, classes): each client's share of training examples per class, as the
    partitioner ``spec`` splits ``labels`` (each client process computes the same split)."""
    parts = partition(labels, spec, clients, seed)
    counts = np.stack([np.bincount(labels[p], minlength=classes)[:classes] for p in parts])
    return counts / counts.sum(axis=1, keepdims=True)


def mix_accuracies(recalls: list[float], mixes: np.ndarray) -> list[float]:
    """Each client's expected accuracy on test data drawn with its own label mix.

    The test set is IID, so a client's accuracy there says nothing about how the model
    serves *its* data; weighting the per-class recalls by its label mix does (the images of
    a class look alike across clients, only the mix of classes differs).
    """
    recall = np.nan_to_num(np.asarray(recalls, dtype=np.float64))
    return [float(v) for v in mixes @ recall]
