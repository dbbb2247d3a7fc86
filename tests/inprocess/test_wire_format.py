"""The wire and file format: typed header + raw bytes, safetensors-compatible, chunked."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stratafl.errors import ModelFormatError
from stratafl.modelfile.codec import (
    MappedModelFile,
    check_model_file,
    copy_params_from_file,
    save_params,
)
from stratafl.modelfile.header import read_header
from stratafl.params import TensorSpec, check_same_layout, specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.transport.streams import (
    CHUNK_BYTES,
    header_to_proto,
    params_chunks,
    receive_model,
    receive_params,
    send_model,
    specs_from_proto,
)

DTYPES = ["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"]


def _roundtrip_via_messages(params: dict[str, np.ndarray], chunk_bytes: int = CHUNK_BYTES):
    specs = specs_of(params)
    header = header_to_proto("m", specs)
    messages = list(send_model(pb.ModelChunk, header, params_chunks(params, chunk_bytes)))
    wire = [pb.ModelChunk.FromString(m.SerializeToString()) for m in messages]
    assert wire[0].WhichOneof("part") == "header"
    got_header, got, wire_bytes = receive_params(iter(wire), "a test stream")
    assert wire_bytes == sum(m.ByteSize() for m in messages)
    return specs_from_proto(got_header), got, messages


@settings(max_examples=60, deadline=None)
@given(
    arrays=st.lists(
        st.sampled_from(DTYPES).flatmap(
            lambda dtype: hnp.arrays(
                dtype=dtype, shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)
            )
        ),
        min_size=0,
        max_size=5,
    ),
    chunk_bytes=st.integers(min_value=1, max_value=64),
)
def test_every_dtype_and_shape_survives_the_wire(arrays, chunk_bytes):
    params = {f"t{i}": a for i, a in enumerate(arrays)}
    specs, got, messages = _roundtrip_via_messages(params, chunk_bytes)
    assert specs == specs_of(params)
    assert list(got) == list(params)
    for name, array in params.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape
        np.testing.assert_array_equal(got[name], array)
    assert all(len(m.data) <= chunk_bytes for m in messages[1:])


def test_empty_model_and_empty_tensors():
    params = {"empty": np.zeros((0, 3), np.float32), "scalar": np.array(2.5, np.float64)}
    _, got, _ = _roundtrip_via_messages(params)
    assert got["empty"].shape == (0, 3)
    assert got["scalar"] == 2.5
    assert _roundtrip_via_messages({})[1] == {}


def test_large_model_moves_in_chunks_of_at_most_1_mib():
    params = {"big": np.arange(3 * CHUNK_BYTES // 4 + 123, dtype=np.float32), "b": np.ones(7)}
    _, got, messages = _roundtrip_via_messages(params)
    sizes = [len(m.data) for m in messages[1:]]
    assert max(sizes) == CHUNK_BYTES == 1024 * 1024
    assert sum(sizes) == params["big"].nbytes + params["b"].nbytes
    np.testing.assert_array_equal(got["big"], params["big"])


def test_model_files_open_with_the_stock_safetensors_library(tmp_path: Path):
    params = {
        "w": np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32),
        "b": np.arange(4, dtype=np.int64),
        "flag": np.array([True, False]),
    }
    save_params(tmp_path / "m.safetensors", params, {"parent": "abc"})
    theirs = safetensors.numpy.load_file(str(tmp_path / "m.safetensors"))
    for name, array in params.items():
        np.testing.assert_array_equal(theirs[name], array)
    safetensors.numpy.save_file(params, str(tmp_path / "theirs.safetensors"))
    ours = copy_params_from_file(tmp_path / "theirs.safetensors")
    for name, array in params.items():
        np.testing.assert_array_equal(ours[name], array)


def test_mapped_model_files_map_each_access_without_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import stratafl.modelfile.codec

    monkeypatch.setattr(stratafl.modelfile.codec, "SMALL_FILE_BYTES", 0)  # as for a large file
    params = {"w": np.arange(10, dtype=np.float32), "empty": np.zeros((0, 2), np.int64)}
    save_params(tmp_path / "m.safetensors", params)
    mapped = MappedModelFile(tmp_path / "m.safetensors")
    assert list(mapped) == ["w", "empty"]
    assert isinstance(mapped["w"], np.memmap) and mapped["w"] is not mapped["w"]
    np.testing.assert_array_equal(mapped["w"], params["w"])
    assert mapped["empty"].shape == (0, 2)


def test_small_model_files_are_read_once_and_stay_read_only(tmp_path: Path):
    params = {"w": np.arange(10, dtype=np.float32), "empty": np.zeros((0, 2), np.int64)}
    save_params(tmp_path / "m.safetensors", params)
    mapped = MappedModelFile(tmp_path / "m.safetensors")
    (tmp_path / "m.safetensors").unlink()  # read whole: the file is no longer needed
    assert not isinstance(mapped["w"], np.memmap) and not mapped["w"].flags.writeable
    np.testing.assert_array_equal(mapped["w"], params["w"])
    assert mapped["empty"].shape == (0, 2)


def test_a_model_file_shorter_than_its_header_says_is_refused(tmp_path: Path):
    save_params(tmp_path / "m.safetensors", {"w": np.arange(10, dtype=np.float32)})
    raw = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(raw[:-4])
    with pytest.raises(ModelFormatError, match="holds 36 data bytes but its header announces 40"):
        check_model_file(tmp_path / "m.safetensors")


def test_a_torn_upload_never_appears_under_its_name(tmp_path: Path):
    from stratafl.modelfile.codec import ModelFileWriter

    target = tmp_path / "m.safetensors"
    with pytest.raises(ModelFormatError, match="ended after 4 of 40 bytes"):
        with ModelFileWriter(target, [TensorSpec("w", "F32", (10,))]) as writer:
            writer.write(b"\0" * 4)
    assert not target.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01", "shorter than its 8-byte header"),
        ((5).to_bytes(8, "little") + b"nope!", "not valid JSON"),
        ((2).to_bytes(8, "little") + b"[]", "must be a JSON object"),
        ((200 * 1024 * 1024).to_bytes(8, "little"), "the limit is"),
    ],
)
def test_malformed_headers_are_named(raw: bytes, message: str):
    with pytest.raises(ModelFormatError, match=message):
        read_header(io.BytesIO(raw))


def test_header_with_wrong_byte_span_is_rejected():
    bad = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}'
    with pytest.raises(ModelFormatError, match="spans 8 bytes"):
        read_header(io.BytesIO(len(bad).to_bytes(8, "little") + bad))


def test_unknown_dtype_codes_and_negative_dims_are_rejected():
    header = header_to_proto("m", [TensorSpec("w", "F32", (2,))])
    header.tensors[0].dtype = "OBJECT"
    with pytest.raises(ModelFormatError, match="unknown dtype code 'OBJECT'"):
        specs_from_proto(header)
    header.tensors[0].dtype = "F32"
    header.tensors[0].shape[:] = [-1]
    with pytest.raises(ModelFormatError, match="negative dimension"):
        specs_from_proto(header)


def test_object_arrays_cannot_be_sent():
    with pytest.raises(ModelFormatError, match="cannot be sent"):
        specs_of({"x": np.array([object()])})


def test_layout_mismatch_names_the_tensor():
    expected = [TensorSpec("w", "F32", (2, 2))]
    with pytest.raises(ModelFormatError, match=r"'w' is F32\[2, 3\]"):
        check_same_layout(expected, [TensorSpec("w", "F32", (2, 3))])
    with pytest.raises(ModelFormatError, match=r"missing \['w'\]"):
        check_same_layout(expected, [TensorSpec("v", "F32", (2, 2))])


def _stream(specs: list[TensorSpec], *data: bytes) -> list[pb.ModelChunk]:
    return list(send_model(pb.ModelChunk, header_to_proto("m", specs), data))


def test_receiver_refuses_more_or_fewer_bytes_than_announced():
    specs = [TensorSpec("w", "F32", (2,))]
    with pytest.raises(ModelFormatError, match="more than the 8 bytes"):
        receive_params(iter(_stream(specs, b"\0" * 12)), "a download")
    with pytest.raises(ModelFormatError, match="ended after 4 of 8"):
        receive_params(iter(_stream(specs, b"\0" * 4)), "a download")


def test_receiver_refuses_a_stream_without_its_header_or_with_two():
    specs = [TensorSpec("w", "F32", (2,))]
    with pytest.raises(ModelFormatError, match="a download did not start with its header"):
        receive_params(iter([pb.ModelChunk(data=b"\0" * 8)]), "a download")
    twice = _stream(specs, b"\0" * 4) + _stream(specs, b"\0" * 4)
    with pytest.raises(ModelFormatError, match="a second header"):
        receive_params(iter(twice), "a download")


async def _aiter(messages):
    for message in messages:
        yield message


def _save(messages, path: Path, expect=None) -> tuple[list[TensorSpec], int]:
    async def run():
        incoming = await receive_model(_aiter(messages), "an update")
        specs = await incoming.save(path, incoming.header, expect=expect)
        return specs, incoming.wire_bytes

    return asyncio.run(run())


def test_a_stream_saved_to_disk_is_the_model_that_was_sent(tmp_path: Path):
    params = {"w": np.arange(10, dtype=np.float32), "b": np.ones(3)}
    messages = list(
        send_model(pb.ModelChunk, header_to_proto("m", specs_of(params)), params_chunks(params, 7))
    )
    specs, wire_bytes = _save(messages, tmp_path / "m.safetensors")
    assert specs == specs_of(params)
    assert wire_bytes == sum(m.ByteSize() for m in messages)
    for name, array in copy_params_from_file(tmp_path / "m.safetensors").items():
        np.testing.assert_array_equal(array, params[name])


def test_a_layout_other_than_expected_is_refused_before_any_byte_is_written(tmp_path: Path):
    got = [TensorSpec("w", "F32", (3,))]
    with pytest.raises(ModelFormatError, match=r"'w' is F32\[3\]"):
        _save(
            _stream(got, b"\0" * 12),
            tmp_path / "m.safetensors",
            expect=[TensorSpec("w", "F32", (2,))],
        )
    assert not list(tmp_path.iterdir())
    with pytest.raises(ModelFormatError, match="an update ended before its header"):
        _save([], tmp_path / "m.safetensors")
