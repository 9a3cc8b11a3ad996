"""The synthetic face renderer and its datasets: every driven shape changes the image where it should, nuisances
change it too, and datasets are the same bytes for a seed whatever the number of processes."""

from __future__ import annotations

import numpy as np
import pytest

from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.sources.face_dataset import DRIVEN_INDEX, VALIDATION_SEED, face_dataset, write_validation_set
from twinfer.sources.synthetic_face import (
    DRIVEN,
    Scene,
    expression_at,
    random_expression,
    render_face,
    synthetic_frames,
)

REQUIRED = {"eyeBlinkLeft", "eyeBlinkRight", "eyeWideLeft", "eyeWideRight", "jawOpen", "mouthSmileLeft",
            "mouthSmileRight", "mouthFunnel", "mouthPucker", "browInnerUp", "browDownLeft", "browDownRight",
            "cheekPuff"}


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)) > 8


def test_the_issue_s_shapes_are_all_driven_and_are_arkit_names():
    assert REQUIRED <= set(DRIVEN)
    assert set(DRIVEN) <= set(ARKIT_BLENDSHAPES)


@pytest.mark.parametrize("name", DRIVEN)
def test_each_shape_changes_the_image(name):
    neutral = render_face({}, 128)
    posed = render_face({name: 1.0}, 128)
    assert _changed(neutral, posed).sum() > 15, name
    half = render_face({name: 0.5}, 128)
    # Continuous: half way is a different image from both ends (soft edges, no thresholds).
    assert _changed(neutral, half).sum() > 0 and _changed(posed, half).sum() > 0


@pytest.mark.parametrize(("name", "image_side"), [("eyeBlinkLeft", "right"), ("eyeBlinkRight", "left"),
                                                  ("mouthSmileLeft", "right"), ("browDownRight", "left")])
def test_left_shapes_show_on_the_image_s_right(name, image_side):
    """A camera facing the person: their left is the image's right (not mirrored)."""
    diff = _changed(render_face({}, 128), render_face({name: 1.0}, 128))
    left, right = diff[:, :64].sum(), diff[:, 64:].sum()
    assert (right > 3 * left) if image_side == "right" else (left > 3 * right)


def test_blink_closes_the_eye_and_wide_opens_it():
    def eye_white(values):
        image = render_face(values, 128)
        return (image[30:70, 70:110] > 230).sum()  # the person's left eye, on the image's right

    assert eye_white({"eyeBlinkLeft": 1.0}) < 0.2 * eye_white({})
    assert eye_white({"eyeWideLeft": 1.0}) > 1.3 * eye_white({})


def test_jaw_open_darkens_the_mouth():
    def dark(values):
        return (render_face(values, 128)[80:120, 40:88] < 40).sum()

    assert dark({"jawOpen": 1.0}) > 5 * max(dark({}), 1)


@pytest.mark.parametrize("field", ["yaw", "pitch", "roll", "shift_x", "shift_y", "scale", "light_strength",
                                   "noise", "background"])
def test_every_nuisance_changes_the_image(field):
    value = {"scale": 1.1, "noise": 0.05}.get(field, 0.3)
    assert _changed(render_face({}, 96), render_face({}, 96, Scene(**{field: value}))).sum() > 20


def test_uint8_and_float_are_the_same_pixels():
    scene = Scene(noise=0.03, noise_seed=5)
    pixels = render_face({"jawOpen": 0.4}, 64, scene)
    floats = render_face({"jawOpen": 0.4}, 64, scene, as_float=True)
    assert pixels.dtype == np.uint8 and floats.dtype == np.float32
    np.testing.assert_array_equal(floats, pixels.astype(np.float32) / 255.0)


def test_random_expressions_cover_the_range_and_never_blink_and_widen_one_eye():
    rng = np.random.default_rng(3)
    samples = [random_expression(rng) for _ in range(2000)]
    for name in DRIVEN:
        values = np.array([s[name] for s in samples])
        assert (values == 0).mean() > 0.25 and (values == 1).mean() > 0.03 and ((values > 0.2) & (values < 0.8)).any()
    for side in ("Left", "Right"):
        assert not any(s[f"eyeBlink{side}"] > 0 and s[f"eyeWide{side}"] > 0 for s in samples)


def test_streamed_expressions_move_smoothly_and_stay_in_range():
    values = [expression_at(t / 60) for t in range(600)]
    for name in DRIVEN:
        series = np.array([v[name] for v in values])
        assert series.min() >= 0 and series.max() <= 1
        assert series.std() > 0.05, name  # it moves
        if not name.startswith(("eyeBlink", "eyeWide")):  # blinks are quick; widening fades out over them
            assert np.abs(np.diff(series)).max() < 0.05, name  # ... smoothly at 60 fps
    frame, driving = next(synthetic_frames(60, size=200))
    assert frame.shape == (200, 200) and frame.dtype == np.uint8 and set(driving) == set(DRIVEN)


def test_datasets_are_deterministic_whatever_the_process_count():
    one = face_dataset(300, 48, seed=11, processes=1)
    two = face_dataset(300, 48, seed=11, processes=2)
    other = face_dataset(300, 48, seed=12, processes=1)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert not np.array_equal(one[1], other[1])
    images, targets = one
    assert images.shape == (300, 1, 48, 48) and targets.shape == (300, 52)
    undriven = np.setdiff1d(np.arange(52), DRIVEN_INDEX)
    assert (targets[:, undriven] == 0).all() and targets[:, DRIVEN_INDEX].std() > 0.2


def test_validation_set_is_written_atomically_with_its_own_seed(tmp_path):
    path = write_validation_set(tmp_path / "validation.npz", 32, samples=20)
    with np.load(path) as data:
        assert data["image"].shape == (20, 1, 32, 32) and data["blendshapes"].shape == (20, 52)
        expected = face_dataset(20, 32, VALIDATION_SEED)
        np.testing.assert_array_equal(data["blendshapes"], expected[1])
    assert [p.name for p in tmp_path.iterdir()] == ["validation.npz"]
