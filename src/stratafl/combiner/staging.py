"""Incoming updates are staged to disk, checked, then folded.

Staging keeps the combiner's memory at O(model) whatever the number of concurrent uploads
(each upload holds one 4 MiB chunk at a time), and it means a malformed or poisoned update
never touches the running sum: it is checked whole before it is folded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from stratafl.errors import ModelFormatError, UpdateRejected
from stratafl.params import TensorSpec, check_same_layout, specs_of

CHECK_BLOCK = 1 << 20


def check_update(update: Mapping[str, np.ndarray], reference: Sequence[TensorSpec]) -> None:
    """Reject an update whose layout differs from the global model's or that holds NaN/Inf."""
    try:
        check_same_layout(reference, specs_of(update))
    except ModelFormatError as exc:
        raise UpdateRejected(str(exc)) from exc
    for name, array in update.items():
        if not np.issubdtype(array.dtype, np.floating):
            continue
        flat = array.reshape(-1)
        for start in range(0, flat.size, CHECK_BLOCK):
            if not np.isfinite(flat[start : start + CHECK_BLOCK]).all():
                raise UpdateRejected(f"tensor {name!r} holds NaN or Inf")
