"""The checks every update passes before any aggregation rule sees it.

A rule's guarantees assume well-formed finite inputs: one NaN poisons a mean, and a median
over an update with the wrong shape would broadcast silently. So an update whose tensor
names, shapes or dtypes differ from the global model's, or that holds NaN or Inf, is
rejected with `UpdateRejected`, whose message is the reason to record; the round goes on
without it. Values are scanned in blocks, so a memmapped update is never read whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from stratafl.aggregate.blocks import coordinate_blocks, flat
from stratafl.errors import ModelFormatError, UpdateRejected
from stratafl.params import TensorSpec, check_same_layout, specs_of


def check_update(update: Mapping[str, np.ndarray], reference_specs: Sequence[TensorSpec]) -> None:
    """Raise `UpdateRejected` naming the first problem found, or return None."""
    try:
        check_same_layout(reference_specs, specs_of(update))
    except ModelFormatError as exc:
        raise UpdateRejected(f"update rejected: {exc}") from exc
    check_finite(update, reference_specs)


def check_finite(update: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> None:
    """Raise `UpdateRejected` if a floating tensor of ``update`` holds NaN or Inf.

    For an update whose layout was already checked where it arrived (the runtime checks
    the announced layout before it reads a byte); `check_update` does both.
    """
    for spec in specs:
        if not np.issubdtype(spec.numpy_dtype, np.floating):
            continue
        nan = inf = 0
        for block in coordinate_blocks(spec.size, 1):
            chunk = flat(update[spec.name])[block]  # afresh: one block's pages resident
            if not np.isfinite(chunk).all():
                nan += int(np.isnan(chunk).sum())
                inf += int(np.isinf(chunk).sum())
        if nan or inf:
            raise UpdateRejected(
                f"update rejected: tensor {spec.name!r} holds {nan} NaN and {inf} Inf values "
                f"out of {spec.size}; lower the client's learning rate or check its data"
            )
