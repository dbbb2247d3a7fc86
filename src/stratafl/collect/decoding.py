"""Compressed updates back to plain models, before any aggregation rule sees them.

A client's compressed update is staged as it arrived (its encoded tensors, laid out as
the session's codec says); `decode_staged` rewrites it in place as the model the client
trained, in the global model's dtypes, one tensor at a time (memory O(largest tensor)).
The rules then fold it as they fold any update: they never import a codec.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from stratafl.compression import Compression, decode
from stratafl.modelfile.codec import MappedModelFile, ModelFileWriter, tensor_bytes
from stratafl.params import TensorSpec


def decode_staged(
    staged: Path,
    reference: Mapping[str, np.ndarray],
    specs: list[TensorSpec],
    compression: Compression,
) -> None:
    """Replace the encoded update at ``staged`` with the model laid out as ``specs`` that
    it encodes against ``reference``. Raises `ModelFormatError` (naming the tensor) on
    anything a codec refuses; ``staged`` is then deleted."""
    decoded = staged.with_name(staged.name + ".decoded")
    try:
        parts = MappedModelFile(staged)
        with ModelFileWriter(decoded, specs) as writer:
            for spec in specs:
                array = decode(spec, parts, reference[spec.name], compression)
                for piece in tensor_bytes({spec.name: array.astype(spec.numpy_dtype, copy=False)}):
                    writer.write(piece)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    os.replace(decoded, staged)
