"""What an attack achieved, measured on a model's predictions over clean test data."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stratafl.attacks.data import Backdoor
from stratafl.errors import ConfigError

Predict = Callable[[np.ndarray], np.ndarray]
"""A model's class predictions for a batch of inputs, one integer label per row."""


def attack_success_rate(
    predict: Predict, x: np.ndarray, y: np.ndarray, backdoor: Backdoor
) -> float:
    """The fraction of stamped test images classified as the backdoor's target.

    Only images whose true label is not the target count (Bagdasaryan et al. 2020): a
    target-class image classified as the target says nothing about the trigger.
    """
    y = np.asarray(y)
    keep = y != backdoor.target
    if not keep.any():
        raise ConfigError(
            f"attack_success_rate needs test images whose label is not {backdoor.target}"
        )
    predicted = np.asarray(predict(backdoor.stamp(np.asarray(x)[keep])))
    return float(np.mean(predicted == backdoor.target))
