"""Framing and the tensor codec of the game protocol."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinfer.errors import FrameTooLarge, InvalidInput
from twinfer.protocol import game_pb2
from twinfer.protocol.error_codes import CODE_TO_ERROR, ERROR_TO_CODE, code_for, code_name
from twinfer.protocol.framing import HEADER_SIZE, FrameDecoder, encode_frame
from twinfer.protocol.tensors import numpy_to_tensor, tensor_to_numpy


def test_header_is_big_endian_length_then_flags():
    assert encode_frame(b"abc", flags=0x0102) == b"\x00\x00\x00\x03\x01\x02abc"
    assert HEADER_SIZE == 6


@given(st.lists(st.binary(max_size=300), max_size=12), st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_any_split_of_a_stream_yields_the_same_frames(bodies, cuts):
    stream = b"".join(encode_frame(b, flags=i % 3) for i, b in enumerate(bodies))
    decoder, got, pos, i = FrameDecoder(max_body=1000), [], 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        got.extend(decoder.feed(stream[pos : pos + step]))
        pos, i = pos + step, i + 1
    assert got == [(i % 3, b) for i, b in enumerate(bodies)]
    assert decoder.buffered == 0


def test_oversized_declaration_raises_before_buffering_the_body():
    decoder = FrameDecoder(max_body=100)
    with pytest.raises(FrameTooLarge, match="101 bytes"):
        list(decoder.feed(struct.pack(">IH", 101, 0) + b"x" * 50))
    assert decoder.buffered == 0


def test_a_body_of_exactly_the_limit_is_accepted():
    assert list(FrameDecoder(max_body=4).feed(encode_frame(b"abcd"))) == [(0, b"abcd")]


@pytest.mark.parametrize("dtype", ["<f4", "<f2", "<f8", "<i1", "<i2", "<i4", "<i8", "<u1", "<u2", "<u4", "<u8", "?"])
def test_tensor_round_trip_every_datatype(dtype):
    array = (np.arange(24).reshape(2, 3, 4) % 2 if dtype == "?" else np.arange(24).reshape(2, 3, 4)).astype(dtype)
    back = tensor_to_numpy(numpy_to_tensor("t", array))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_big_endian_and_strided_arrays_go_out_little_endian_and_contiguous():
    array = np.arange(12, dtype=">f4").reshape(3, 4)[:, ::2]
    tensor = numpy_to_tensor("t", array)
    assert tensor.datatype == "FP32" and tensor.data == np.ascontiguousarray(array, "<f4").tobytes()


@pytest.mark.parametrize(
    "tensor, words",
    [
        (game_pb2.Tensor(name="a", datatype="FP32", shape=[2], data=b"\0" * 4), "needs 8"),
        (game_pb2.Tensor(name="a", datatype="FLOAT", shape=[1], data=b"\0" * 4), "unknown datatype"),
        (game_pb2.Tensor(name="a", datatype="FP32", shape=[-1], data=b""), "negative"),
        (game_pb2.Tensor(name="a", datatype="BYTES", shape=[1], data=b"x"), "BYTES"),
    ],
)
def test_bad_tensors_are_invalid_input(tensor, words):
    with pytest.raises(InvalidInput, match=words):
        tensor_to_numpy(tensor)


def test_every_typed_error_has_a_distinct_wire_code_and_maps_back():
    codes = list(ERROR_TO_CODE.values())
    assert len(codes) == len(set(codes))
    for cls, code in ERROR_TO_CODE.items():
        assert code_for(cls("x")) == code and CODE_TO_ERROR[code] is cls
    assert code_for(ValueError()) == game_pb2.ERROR_CODE_INTERNAL
    assert code_name(game_pb2.ERROR_CODE_OVERLOADED) == "OVERLOADED"
