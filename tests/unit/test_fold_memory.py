"""Folding an update mapped from disk keeps one window of its pages resident, not the
whole tensor: a 1 GB model of one tensor must fold within the combiner's memory bound."""

from __future__ import annotations

import subprocess
import sys

FOLD_A_MAPPED_TENSOR = """
import sys, tempfile
from pathlib import Path
import numpy as np
from stratafl.aggregate import WeightedMeanFold, check_finite
from stratafl.modelfile.codec import MappedModelFile, save_params
from stratafl.params import specs_of

def peak_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

size = 50_000_000  # one tensor of 200 MB
path = Path(tempfile.mkdtemp()) / "update.safetensors"
save_params(path, {"w": np.ones(size, np.float32)})
update = MappedModelFile(path)
fold = WeightedMeanFold(specs_of(update))
zeros = np.broadcast_to(np.float32(0), (size,))  # a view of one value: no memory of its own
fold.add({"w": zeros}, 1.0)  # touches the 400 MB of sums first: only the update's pages remain
before = peak_kib()
check_finite(update, update.specs)
fold.add(update, 2.0)
print((peak_kib() - before) * 1024)
"""


def test_folding_a_tensor_mapped_from_disk_keeps_only_a_window_of_it_resident():
    done = subprocess.run(
        [sys.executable, "-c", FOLD_A_MAPPED_TENSOR], capture_output=True, text=True, check=True
    )
    growth = int(done.stdout.strip())
    assert growth < 60 * 10**6, f"the fold held {growth / 1e6:.0f} MB of a 200 MB update"
