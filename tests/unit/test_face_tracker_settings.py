"""A face_tracker version's tracker.yaml: numbers must be positive numbers, `batch_across_streams` must be a
boolean, and the stream's processor reads it (inline frames unless it is true)."""

from __future__ import annotations

import pytest

from twinfer.backends.face_tracker import FaceTrackerBackend
from twinfer.errors import ModelLoadError
from twinfer.inference.model_config import ModelConfig
from twinfer.streaming.face_processor import batches_across_streams, solver_from

CONFIG = ModelConfig(name="face_tracker", backend="face_tracker",
                     inputs=[{"name": "image", "datatype": "UINT8", "dims": [-1, -1, 3]}],
                     outputs=[{"name": "blendshapes", "datatype": "FP32", "dims": [52]}])


def backend(tmp_path, text: str) -> FaceTrackerBackend:
    path = tmp_path / "tracker.yaml"
    path.write_text(text)
    return FaceTrackerBackend(CONFIG, path)


def test_defaults_run_frames_inline(tmp_path):
    assert not batches_across_streams(backend(tmp_path, "score_threshold: 0.5\n"))


def test_batch_across_streams_true_sends_the_calls_through_the_facade(tmp_path):
    tracker = backend(tmp_path, "batch_across_streams: true\nease_s: 0.25\n")
    assert batches_across_streams(tracker)
    assert solver_from(tracker)._easing.ease_s == 0.25  # the switch does not disturb the solver's numbers


@pytest.mark.parametrize("text, message", [
    ("batch_across_streams: 1\n", "must be true or false"),
    ("batch_across_streams: yes please\n", "must be true or false"),
    ("ease_s: true\n", "must be a positive number"),
    ("ease_s: -1\n", "must be a positive number"),
    ("smoothing: 2\n", "expected a mapping of"),
])
def test_wrong_values_are_one_load_error(tmp_path, text, message):
    with pytest.raises(ModelLoadError, match=message):
        backend(tmp_path, text)
