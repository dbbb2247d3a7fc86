"""The checks before any rule: layout, NaN and Inf, read block by block."""

from __future__ import annotations

import numpy as np
import pytest

from stratafl.aggregate import blocks as blocks_module
from stratafl.aggregate import check_update
from stratafl.errors import UpdateRejected
from stratafl.params import specs_of

GLOBAL = {
    "w": np.zeros((4, 5), dtype=np.float32),
    "steps": np.zeros(2, dtype=np.int64),
}
SPECS = specs_of(GLOBAL)


def test_a_well_formed_update_passes() -> None:
    check_update({"w": np.ones((4, 5), dtype=np.float32), "steps": np.ones(2, np.int64)}, SPECS)


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"w": GLOBAL["w"]}, r"missing \['steps'\]"),
        ({**GLOBAL, "extra": np.zeros(1)}, r"unexpected \['extra'\]"),
        ({**GLOBAL, "w": np.zeros((5, 4), np.float32)}, r"'w' is F32\[5, 4\]"),
        ({**GLOBAL, "w": np.zeros((4, 5), np.float64)}, r"'w' is F64\[4, 5\]"),
    ],
)
def test_layout_differences_are_rejected_with_the_reason(update, reason: str) -> None:  # noqa: ANN001
    with pytest.raises(UpdateRejected, match=reason) as info:
        check_update(update, SPECS)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("bad", "counts"), [(np.nan, "1 NaN and 0 Inf"), (np.inf, "0 NaN and 1 Inf")]
)
def test_non_finite_values_are_rejected_naming_the_tensor(
    bad: float, counts: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = np.zeros((4, 5), dtype=np.float32)
    w[3, 4] = bad
    monkeypatch.setattr(blocks_module, "BLOCK_ELEMENTS", 3)
    with pytest.raises(UpdateRejected, match=f"tensor 'w' holds {counts} values out of 20"):
        check_update({**GLOBAL, "w": w}, SPECS)


def test_memmapped_updates_are_checked(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "w.bin"
    w = np.zeros((4, 5), dtype=np.float32)
    w[0, 0] = -np.inf
    w.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=(4, 5))
    with pytest.raises(UpdateRejected, match="1 Inf"):
        check_update({**GLOBAL, "w": mapped}, SPECS)
