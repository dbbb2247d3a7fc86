"""The update codecs as maths: round trips, error bounds, top-k's error feedback, parsing.

Each codec is checked on the update it encodes (trained params minus the global model):
float16 within its relative precision, int8 within half a step of its per-tensor scale,
top-k keeping exactly the k largest magnitudes and carrying the rest to later rounds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stratafl.compression import (
    NONE,
    Codec,
    Compression,
    ErrorFeedback,
    check_codec,
    decode,
    encode_update,
    parse_compression,
    update_layout,
)
from stratafl.errors import ConfigError, ModelFormatError
from stratafl.params import TensorSpec, specs_of

FLOAT16 = Compression(Codec.FLOAT16)
INT8 = Compression(Codec.INT8)

shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12)
deltas = hnp.arrays(
    np.float32,
    shapes,
    elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False),
)


def _round_trip(delta: np.ndarray, compression: Compression, **kw) -> np.ndarray:
    """The update ``delta`` as the combiner decodes it (against a zero global model)."""
    reference = {"w": np.zeros_like(delta)}
    encoded = encode_update({"w": delta}, reference, compression, **kw)
    assert specs_of(encoded) == update_layout(specs_of(reference), compression)
    return decode(TensorSpec.of("w", delta), encoded, reference["w"], compression)


@given(deltas)
def test_float16_keeps_every_entry_within_its_relative_precision(delta):
    back = _round_trip(delta, FLOAT16)
    assert back.dtype == np.float32
    # float16 has an 11-bit significand; below its normal range the step is 2**-24
    bound = np.abs(delta) * 2.0**-11 + 2.0**-24
    assert np.all(np.abs(back - delta) <= bound)


@given(deltas)
def test_int8_keeps_every_entry_within_half_a_step_of_its_scale(delta):
    reference = {"w": np.zeros_like(delta)}
    encoded = encode_update({"w": delta}, reference, INT8)
    scale = float(encoded["s:w"])
    assert scale == pytest.approx(float(np.max(np.abs(delta))) / 127, rel=1e-6)
    assert encoded["q:w"].dtype == np.int8 and np.all(np.abs(encoded["q:w"]) <= 127)
    back = decode(TensorSpec.of("w", delta), encoded, reference["w"], INT8)
    # half a step, plus float32's rounding of q * scale
    assert np.all(np.abs(back - delta) <= scale / 2 + np.abs(delta) * 2.0**-22)


@given(deltas, st.floats(0.001, 1.0))
def test_top_k_sends_exactly_the_k_largest_magnitudes(delta, fraction):
    compression = Compression(Codec.TOPK, fraction)
    encoded = encode_update({"w": delta}, {"w": np.zeros_like(delta)}, compression)
    indices, values = encoded["i:w"], encoded["v:w"]
    k = compression.k_of(delta.size)
    assert len(indices) == len(np.unique(indices)) == k >= fraction * delta.size
    flat = delta.reshape(-1)
    assert np.array_equal(values, flat[indices])
    rest = np.delete(np.abs(flat), indices)
    if rest.size:
        assert np.abs(values).min() >= rest.max()


@settings(max_examples=50)
@given(
    st.lists(
        hnp.arrays(np.float32, (4, 5), elements=st.floats(-10, 10, width=32)),
        min_size=1,
        max_size=6,
    ),
    st.floats(0.05, 0.5),
)
def test_top_k_with_error_feedback_sends_every_update_in_the_end(updates, fraction):
    """Sum over rounds of what was sent, plus the residual kept, is the sum of updates."""
    compression = Compression(Codec.TOPK, fraction)
    feedback = ErrorFeedback("session")
    zero = {"w": np.zeros((4, 5), np.float32)}
    sent = np.zeros((4, 5), np.float64)
    for delta in updates:
        encoded = encode_update({"w": delta}, zero, compression, feedback)
        sent += decode(TensorSpec.of("w", delta), encoded, zero["w"], compression)
    total = np.sum(np.array(updates, np.float64), axis=0)
    np.testing.assert_allclose(sent + feedback.residuals["w"], total, rtol=1e-5, atol=1e-4)


def test_a_residual_of_another_session_or_layout_is_never_added():
    compression = Compression(Codec.TOPK, 0.25)
    zero = {"w": np.zeros(4, np.float32)}
    feedback = ErrorFeedback("a")
    encode_update({"w": np.array([4, 3, 2, 1], np.float32)}, zero, compression, feedback)
    np.testing.assert_array_equal(feedback.residuals["w"], [0, 3, 2, 1])
    feedback.for_session("b")
    encoded = encode_update({"w": np.array([0, 0, 0, 1], np.float32)}, zero, compression, feedback)
    assert list(encoded["i:w"]) == [3]  # the old residual (3 at index 1) is gone
    assert feedback.residual("w", np.zeros(5, np.float32)).shape == (5,)


def test_codecs_encode_the_update_against_the_global_model():
    reference = {"w": np.full(3, 100.0, np.float32)}
    trained = {"w": np.array([100.5, 99.0, 100.0], np.float32)}
    for compression in (FLOAT16, INT8, Compression(Codec.TOPK, 1.0)):
        encoded = encode_update(trained, reference, compression)
        back = decode(TensorSpec.of("w", trained["w"]), encoded, reference["w"], compression)
        np.testing.assert_allclose(back, trained["w"], atol=0.01)


def test_integer_tensors_travel_raw_and_none_sends_the_weights():
    params = {"w": np.ones(3, np.float32), "steps": np.array([7], np.int64)}
    reference = {"w": np.zeros(3, np.float32), "steps": np.array([5], np.int64)}
    encoded = encode_update(params, reference, INT8)
    assert np.array_equal(encoded["r:steps"], [7])
    assert encode_update(params, reference, NONE) == params


@pytest.mark.parametrize("codec", [FLOAT16, INT8, Compression(Codec.TOPK, 0.5)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_before_encoding(codec, bad):
    params = {"w": np.array([1.0, bad], np.float32)}
    with pytest.raises(ModelFormatError, match="NaN or inf"):
        encode_update(params, {"w": np.zeros(2, np.float32)}, codec)


def test_a_change_float16_cannot_hold_is_refused_with_the_fix():
    params = {"w": np.array([1e5], np.float32)}
    with pytest.raises(ModelFormatError, match="use int8 or none"):
        encode_update(params, {"w": np.zeros(1, np.float32)}, FLOAT16)


def test_params_laid_out_unlike_the_global_model_are_refused():
    with pytest.raises(ModelFormatError, match="same names, dtypes and shapes"):
        encode_update({"w": np.zeros(3, np.float32)}, {"w": np.zeros(4, np.float32)}, INT8)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("none", "none"),
        ("", "none"),
        ("float16", "float16"),
        ("INT8", "int8"),
        ("topk:fraction=0.01", "topk:fraction=0.01"),
        (" topk : fraction = 0.010 ", "topk:fraction=0.01"),
    ],
)
def test_compression_strings_parse_to_one_canonical_form(text, canonical):
    assert str(parse_compression(text)) == canonical
    assert parse_compression(canonical) == parse_compression(text)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("zip", "unknown compression"),
        ("topk", "needs fraction=F"),
        ("topk:k=3", "needs fraction=F"),
        ("topk:fraction=x", "not a number"),
        ("topk:fraction=0", "out of range"),
        ("topk:fraction=1.5", "out of range"),
        ("topk:fraction=nan", "out of range"),
        ("int8:fraction=0.1", "takes no options"),
    ],
)
def test_a_bad_compression_names_the_fix(text, says):
    with pytest.raises(ConfigError, match=says) as caught:
        parse_compression(text)
    assert "topk:fraction=F" in str(caught.value)


def test_top_k_sends_at_least_one_entry_of_every_non_empty_tensor():
    compression = Compression(Codec.TOPK, 0.001)
    assert [compression.k_of(n) for n in (0, 1, 10, 1000, 1001)] == [0, 1, 1, 1, 2]


def test_an_update_in_another_codec_than_the_sessions_is_refused():
    check_codec("int8", INT8)
    check_codec("", NONE)  # clients from before codecs send none
    with pytest.raises(ModelFormatError, match="encoded as 'float16' but this session uses"):
        check_codec("float16", INT8)
    with pytest.raises(ModelFormatError, match="this session uses 'none'"):
        check_codec("gzip" * 100, NONE)
