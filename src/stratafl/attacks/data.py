"""Data poisoning: a malicious client changes its own training set once, then trains honestly.

Each attack is a pure ``transform(x, y) -> (x, y)`` on the client's training examples
(new arrays; the inputs are never modified). The client's validation data stays clean, so
what the federation reports is what the attack did to the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from stratafl.errors import ConfigError

MAX_CLASSES = 100_000
MAX_TRIGGER = 64
"""Largest trigger side in pixels a spec may ask for."""


def _check_labels(name: str, y: np.ndarray, classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{name}: labels must be a 1-D integer array, got {y.dtype}{y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise ConfigError(
            f"{name}: labels must be in [0, {classes}); set classes= to the app's class count"
        )
    return y


@dataclass(frozen=True, kw_only=True)
class LabelFlip:
    """Label flipping (Tolpegin et al. 2020, "Data Poisoning Attacks Against Federated
    Learning Systems").

    Without ``source``/``target`` every label ``l`` becomes ``classes - 1 - l`` (9 - l for
    ten classes); with both, only ``source`` becomes ``target``: the targeted variant, whose
    damage shows in the source class's recall while overall accuracy barely moves.
    """

    name: ClassVar[str] = "label_flip"
    source: int | None = None
    target: int | None = None
    classes: int = 10

    def __post_init__(self) -> None:
        if not 2 <= self.classes <= MAX_CLASSES:
            raise ConfigError(f"label_flip: classes={self.classes} must be in [2, {MAX_CLASSES}]")
        if (self.source is None) != (self.target is None):
            raise ConfigError(
                "label_flip: give both source= and target= (one class to another), or neither "
                "(every label l to classes-1-l)"
            )
        for key, value in (("source", self.source), ("target", self.target)):
            if value is not None and not 0 <= value < self.classes:
                raise ConfigError(f"label_flip: {key}={value} must be in [0, {self.classes})")
        if self.source is not None and self.source == self.target:
            raise ConfigError(f"label_flip: source and target are both {self.source}; pick two")

    def transform(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = _check_labels(self.name, y, self.classes)
        if self.source is None or self.target is None:
            return np.array(x, copy=True), (self.classes - 1 - y).astype(y.dtype)
        return np.array(x, copy=True), np.where(y == self.source, self.target, y).astype(y.dtype)


@dataclass(frozen=True, kw_only=True)
class Backdoor:
    """A pixel-pattern backdoor (Gu et al. 2017, "BadNets"; Bagdasaryan et al. 2020, "How To
    Backdoor Federated Learning").

    A ``size`` x ``size`` square of value ``value`` in the bottom-right corner of the image
    is stamped on ``round(fraction * n)`` training examples whose label is not ``target``
    (as many as there are, if fewer), chosen with ``seed``, and they are relabelled
    ``target``. A model that learns the pairing classifies any stamped image as ``target``
    while its clean accuracy stays put; `attack_success_rate` measures it.

    Images are rows of ``side * side`` features (square grey images flattened, as the
    Fashion-MNIST app holds them) or arrays of shape (n, height, width).
    """

    name: ClassVar[str] = "backdoor"
    target: int = 0
    fraction: float = 0.5
    size: int = 4
    value: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target < 0:
            raise ConfigError(f"backdoor: target={self.target} must be a class id >= 0")
        if not (math.isfinite(self.fraction) and 0 < self.fraction <= 1):
            raise ConfigError(f"backdoor: fraction={self.fraction} must be in (0, 1]")
        if not 1 <= self.size <= MAX_TRIGGER:
            raise ConfigError(f"backdoor: size={self.size} must be in [1, {MAX_TRIGGER}] pixels")
        if not math.isfinite(self.value):
            raise ConfigError(f"backdoor: value={self.value} must be a finite pixel value")
        if self.seed < 0:
            raise ConfigError(f"backdoor: seed={self.seed} must be >= 0")

    def stamp(self, x: np.ndarray) -> np.ndarray:
        """A copy of ``x`` with the trigger on every image."""
        images = _as_images(x, self.size)
        images[:, -self.size :, -self.size :] = self.value
        return images.reshape(np.shape(x))

    def transform(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise ConfigError(f"backdoor: need one label per example, got {y.shape} for {len(x)}")
        candidates = np.flatnonzero(y != self.target)
        count = min(round(self.fraction * len(y)), len(candidates))
        chosen = np.random.default_rng(self.seed).choice(candidates, count, replace=False)
        x_out, y_out = np.array(x, copy=True), y.copy()
        x_out[chosen] = self.stamp(x_out[chosen])
        y_out[chosen] = self.target
        return x_out, y_out


def _as_images(x: np.ndarray, size: int) -> np.ndarray:
    """A copy of ``x`` shaped (n, height, width); ConfigError when that shape is unknown."""
    x = np.asarray(x)
    if x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ConfigError(
                f"backdoor: rows of {x.shape[1]} features are not square images; "
                "give the data as (n, height, width)"
            )
        images = x.reshape(len(x), side, side).copy()
    elif x.ndim == 3:
        images = x.copy()
    else:
        raise ConfigError(f"backdoor: images must be (n, h*w) or (n, h, w), got {x.shape}")
    if min(images.shape[1:]) < size:
        raise ConfigError(f"backdoor: a {size}-pixel trigger does not fit {images.shape[1:]}")
    return images


DataAttack = LabelFlip | Backdoor
