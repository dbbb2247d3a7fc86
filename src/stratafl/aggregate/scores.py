"""What a score may be: bounds by the kind its name says, one list for the whole federation.

A client reports its own scores, and the round's score is their weighted mean: one
report of accuracy 1e12 would make the mean of any number of honest accuracies absurd.
A score's name says its kind, so its range is known: a rate (accuracy, precision,
recall, F1, AUC, ...) lies in [0, 1] and a loss is never negative. The combiner refuses
a report with a score out of its kind's range, and the controller leaves such a report out
of the round's scores (a combiner may be hostile too). Names of no known kind keep only
the magnitude bound of `stratafl.combiner.claims`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

RATE_WORDS = frozenset(
    {"accuracy", "acc", "precision", "recall", "f1", "auc", "auroc", "iou", "dice"}
)
"""Words that make a metric a rate in [0, 1], as a whole word of its name (``val_acc``,
``f1_macro``, ``roc_auc``, ``top5-accuracy``)."""
LOSS_WORDS = frozenset({"loss", "nll", "mse", "mae", "rmse", "perplexity"})
"""Words that make a metric a loss, never negative (``train_loss``, ``val_mse``)."""

_WORD = re.compile(r"[a-z0-9]+")


def _words(name: str) -> set[str]:
    """The lower-case words of a metric name (split at anything not a letter or digit)."""
    return set(_WORD.findall(name.lower()))


def score_problem(name: str, value: float) -> str:
    """Why ``value`` cannot be the metric ``name`` ("" if it can), in one line."""
    words = _words(name)
    if words & RATE_WORDS and not 0.0 <= value <= 1.0:
        return f"metric {name[:128]!r} is a rate and must lie in [0, 1], got {value:g}"
    if words & LOSS_WORDS and not value >= 0.0:
        return f"metric {name[:128]!r} is a loss and cannot be negative, got {value:g}"
    return ""


def scores_problem(metrics: Mapping[str, float]) -> str:
    """The first of ``metrics`` out of its kind's range, as `score_problem` says ("": none)."""
    for name, value in metrics.items():
        problem = score_problem(name, value)
        if problem:
            return problem
    return ""
