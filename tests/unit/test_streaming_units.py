"""Stream building blocks: datagram codec, reassembly and replay window, One Euro filter, encoders, preprocessing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinfer.inference.model_config import ModelConfig, TensorConfig
from twinfer.streaming import datagram as dg
from twinfer.streaming.one_euro import OneEuroFilter
from twinfer.streaming.preprocess import image_layout, preprocess
from twinfer.streaming.reassembly import FrameAssembler

KEY = b"k" * 32


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000), st.integers(dg.OVERHEAD + 1, 1500), st.randoms(use_true_random=False))
def test_fragments_reassemble_in_any_order(frame, max_bytes, rnd):
    datagrams = dg.fragment_frame(KEY, 7, 42, 123, frame, max_bytes)
    assert all(len(d) <= max_bytes for d in datagrams)
    rnd.shuffle(datagrams)
    assembler = FrameAssembler()
    results = [assembler.add(dg.decode(KEY, d)) for d in datagrams]
    assert [r for r in results if r is not None] == [(42, 123, frame)]


def test_tag_covers_every_byte():
    data = bytearray(dg.fragment_frame(KEY, 1, 1, 1, b"pixels", 100)[0])
    for i in range(len(data) - dg.TAG_BYTES):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        with pytest.raises(dg.DatagramError) as info:
            dg.decode(KEY, bytes(tampered))
        assert info.value.reason == "forged"


@pytest.mark.parametrize("data", [b"", b"\x01" * 10, b"\x02" + bytes(60)])
def test_short_or_unknown_version_is_malformed(data):
    with pytest.raises(dg.DatagramError) as info:
        dg.peek_stream_id(data)
    assert info.value.reason == "malformed"


def test_replays_and_too_old_frames_are_refused():
    assembler = FrameAssembler(window=8)
    frame = lambda seq: dg.decode(KEY, dg.fragment_frame(KEY, 1, seq, 0, b"x", 100)[0])  # noqa: E731
    assert assembler.add(frame(5))
    with pytest.raises(dg.DatagramError, match="already accepted"):
        assembler.add(frame(5))
    assert assembler.add(frame(3))  # late but inside the window
    assert assembler.add(frame(20))
    with pytest.raises(dg.DatagramError, match="outside the window"):
        assembler.add(frame(12))
    with pytest.raises(dg.DatagramError, match="already accepted"):
        assembler.heartbeat(dg.decode(KEY, dg.heartbeat(KEY, 1, 20, 0)))


def test_partial_frames_are_bounded_and_evicted():
    assembler = FrameAssembler(max_partial=2)
    for seq in (1, 2, 3):
        first = dg.fragment_frame(KEY, 1, seq, 0, b"a" * 300, 100)[0]
        assert assembler.add(dg.decode(KEY, first)) is None
    assert assembler.incomplete == 1 and len(assembler._partial) == 2  # noqa: SLF001


def test_a_frame_larger_than_the_stream_allows_is_dropped():
    assembler = FrameAssembler(max_frame_bytes=150)
    parts = [dg.decode(KEY, d) for d in dg.fragment_frame(KEY, 1, 1, 0, b"a" * 300, 100)]
    assembler.add(parts[0])
    with pytest.raises(dg.DatagramError) as info:
        for part in parts[1:]:
            assembler.add(part)
    assert info.value.reason == "oversized"


def test_one_euro_smooths_jitter_and_follows_a_step():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    t, noisy_out = 0.0, []
    for _ in range(120):
        t += 1 / 60
        noisy_out.append(f(0.5 + rng.normal(0, 0.05, 3), t)[0])
    assert np.std(noisy_out[20:]) < 0.05 / 2  # jitter shrinks
    fast = OneEuroFilter(min_cutoff=1.0, beta=10.0)
    for i in range(60):
        y = fast(np.array([0.0 if i < 30 else 1.0]), i / 60)
    assert y[0] > 0.9  # with beta, a real move is followed quickly


def test_one_euro_first_sample_passes_and_same_time_repeats():
    f = OneEuroFilter()
    assert f(np.array([0.3]), 1.0)[0] == pytest.approx(0.3)
    assert f(np.array([0.9]), 1.0)[0] == pytest.approx(0.3)
    alpha = 1 / (1 + (1 / (2 * math.pi * 1.0)) / 0.5)
    assert f(np.array([0.9]), 1.5)[0] == pytest.approx(alpha * 0.9 + (1 - alpha) * 0.3)


def test_preprocess_converts_channels_resizes_and_normalises():
    config = ModelConfig(name="f", max_batch_size=8,
                         inputs=(TensorConfig(name="image", datatype="FP32", dims=(1, 4, 4)),),
                         outputs=(TensorConfig(name="y", datatype="FP32", dims=(2,)),))
    layout = image_layout(config)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    tensor = preprocess(rgb.tobytes(), "RGB8", 8, 8, layout, batched=True)
    assert tensor.shape == (1, 1, 4, 4) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor, 0.299, rtol=1e-5)
    with pytest.raises(Exception, match="needs 192"):
        preprocess(b"\0" * 10, "RGB8", 8, 8, layout, batched=True)


def test_jpeg_frames_decode_to_the_model_input_and_garbage_is_refused():
    import io

    from PIL import Image

    config = ModelConfig(name="f", max_batch_size=8,
                         inputs=(TensorConfig(name="image", datatype="FP32", dims=(1, 16, 16)),),
                         outputs=(TensorConfig(name="y", datatype="FP32", dims=(2,)),))
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 48, 3), 200, np.uint8)).save(buffer, format="JPEG", quality=95)
    tensor = preprocess(buffer.getvalue(), "JPEG", 48, 32, image_layout(config), batched=True)
    assert tensor.shape == (1, 1, 16, 16)
    np.testing.assert_allclose(tensor, 200 / 255, atol=0.02)
    with pytest.raises(Exception, match="not a readable JPEG"):
        preprocess(b"\xff\xd8garbage", "JPEG", 0, 0, image_layout(config), batched=True)
