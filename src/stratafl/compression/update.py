"""A whole update in and out of a codec: what the client sends, and its layout.

The client encodes the update (its trained params minus the global params it received),
so the combiner needs the same global model to decode, which it holds anyway (it sent it).
Top-k keeps what it did not send in `ErrorFeedback` and adds it to the next update
(Stich et al. 2018): over rounds, everything a client computed is sent, only later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from stratafl.compression.codecs import (
    check_finite_update,
    compressible,
    encode_float16,
    encode_int8,
    encoded_layout,
    top_k,
)
from stratafl.compression.spec import Codec, Compression
from stratafl.errors import ModelFormatError
from stratafl.params import Params, TensorSpec, specs_of


class ErrorFeedback:
    """Top-k's residuals for one session: what each tensor's updates have not yet sent.

    A residual of another session or another layout is dropped, never added to an update
    it does not belong to.
    """

    def __init__(self, session_id: str = "", residuals: Params | None = None) -> None:
        self.session_id = session_id
        self.residuals: Params = dict(residuals or {})

    def for_session(self, session_id: str) -> ErrorFeedback:
        """Itself in ``session_id``; its residuals start at zero in a new session."""
        if session_id != self.session_id:
            self.session_id, self.residuals = session_id, {}
        return self

    def residual(self, name: str, like: np.ndarray) -> np.ndarray:
        kept = self.residuals.get(name)
        if kept is None or kept.shape != like.shape or kept.dtype != like.dtype:
            return np.zeros_like(like)
        return kept


def update_layout(specs: Sequence[TensorSpec], compression: Compression) -> list[TensorSpec]:
    """The layout an update of a model laid out as ``specs`` has on the wire."""
    return [part for spec in specs for part in encoded_layout(spec, compression)]


def encode_update(
    params: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    compression: Compression,
    feedback: ErrorFeedback | None = None,
) -> Params:
    """``params`` as the tensors the wire carries under ``compression``.

    ``reference`` is the global model the client trained from; with top-k, ``feedback``
    (if given) supplies and keeps the residuals. Raises `ModelFormatError` on NaN or inf,
    or when ``params`` is not laid out as ``reference``.
    """
    if not compression.is_delta:
        return dict(params)
    if specs_of(params) != specs_of(reference):
        raise ModelFormatError(
            "the trained params are not laid out as the global model; "
            "return params with the same names, dtypes and shapes from train()"
        )
    encoded: Params = {}
    for spec in specs_of(params):
        name = spec.name
        array = np.asarray(params[name])
        if not compressible(spec, compression):
            encoded["r:" + name] = array
            continue
        delta = array - np.asarray(reference[name])
        if compression.codec == Codec.FLOAT16:
            encoded[name] = encode_float16(name, delta)
        elif compression.codec == Codec.INT8:
            encoded["q:" + name], encoded["s:" + name] = encode_int8(name, delta)
        else:
            encoded["i:" + name], encoded["v:" + name] = _encode_top_k(
                spec, delta, compression, feedback
            )
    return encoded


def _encode_top_k(
    spec: TensorSpec, delta: np.ndarray, compression: Compression, feedback: ErrorFeedback | None
) -> tuple[np.ndarray, np.ndarray]:
    check_finite_update(spec.name, delta)
    carried = delta if feedback is None else delta + feedback.residual(spec.name, delta)
    flat = carried.reshape(-1)
    indices = top_k(flat, compression.k_of(spec.size))
    values = flat[indices]
    if feedback is not None:
        rest = flat.copy()
        rest[indices] = 0
        feedback.residuals[spec.name] = rest.reshape(spec.shape)
    index_dtype = np.int32 if encoded_layout(spec, compression)[0].dtype == "I32" else np.int64
    return indices.astype(index_dtype), values
