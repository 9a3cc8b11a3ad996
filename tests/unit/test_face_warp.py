"""The face crops' two warps (twinfer.faces.warp): OpenCV's fixed-point warpAffine, used when OpenCV is installed,
and the numpy fallback sample the same points of the same ROI; serving without OpenCV takes the numpy one."""

from __future__ import annotations

import numpy as np
import pytest

from twinfer.faces import warp
from twinfer.faces.roi import Roi, crop, crop_to_frame

cv2 = pytest.importorskip("cv2", reason="the video extra brings OpenCV")


def _frame(seed: int = 0) -> np.ndarray:
    """A smooth 240x320 RGB frame with a sharp edge: bilinear weights matter, and one grey level is visible."""
    y, x = np.mgrid[0:240, 0:320]
    image = np.stack([x * 0.7, y, 128 + 100 * np.sin(x / 9.0) * np.cos(y / 7.0)], axis=2)
    image[100:140, 150:200] = np.random.default_rng(seed).integers(0, 256, (40, 50, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("border", ["replicate", "zero"])
@pytest.mark.parametrize("size, flip", [(192, False), (64, True), (128, False)])
def test_opencv_and_numpy_warps_agree_within_one_grey_level(border, size, flip):
    frame = _frame()
    rng = np.random.default_rng(size)
    for _ in range(20):  # inside, across and outside the frame's edges, any turn
        roi = Roi(rng.uniform(-40, 360), rng.uniform(-40, 280), rng.uniform(10, 300), rng.uniform(10, 300),
                  rng.uniform(-np.pi, np.pi))
        matrix = crop_to_frame(roi, size, flip)
        fast, exact = warp.crop_opencv(frame, matrix, size, border), warp.crop_numpy(frame, matrix, size, border)
        assert fast.dtype == exact.dtype == np.float32 and fast.shape == exact.shape == (size, size, 3)
        assert np.abs(fast - exact).max() <= 1.5, roi
        assert np.abs(fast - exact).mean() <= 0.5, roi


def test_grey_frames_keep_their_shape_on_both_warps():
    grey = _frame()[..., 0]
    matrix = crop_to_frame(Roi(160, 120, 100, 100, 0.3), 32)
    for out in (warp.crop_opencv(grey, matrix, 32), warp.crop_numpy(grey, matrix, 32),
                warp.crop_opencv(grey[..., None], matrix, 32)):
        assert out.shape[:2] == (32, 32) and out.dtype == np.float32
    assert warp.crop_opencv(grey[..., None], matrix, 32).shape == (32, 32, 1)


def test_crop_takes_opencv_for_uint8_frames_and_numpy_otherwise_or_without_opencv(monkeypatch):
    frame, roi = _frame(), Roi(150, 110, 90, 90, 0.4)
    matrix = crop_to_frame(roi, 48)
    np.testing.assert_array_equal(crop(frame, roi, 48), warp.crop_opencv(frame, matrix, 48))
    np.testing.assert_array_equal(crop(frame, roi, 48, backend="numpy"), warp.crop_numpy(frame, matrix, 48))
    as_float = frame.astype(np.float32)
    np.testing.assert_array_equal(crop(as_float, roi, 48), warp.crop_numpy(as_float, matrix, 48))
    monkeypatch.setattr(warp, "opencv", lambda: None)  # a server without the video extra
    np.testing.assert_array_equal(crop(frame, roi, 48), warp.crop_numpy(frame, matrix, 48))
    with pytest.raises(RuntimeError, match="OpenCV is not installed"):
        warp.crop_opencv(frame, matrix, 48)


def test_non_contiguous_frames_crop_like_their_copies():
    rgba = np.dstack([_frame(), np.full((240, 320), 255, np.uint8)])
    view = rgba[..., :3]  # as_rgb's RGBA view: strided channels
    roi = Roi(160, 120, 120, 120, -0.5)
    np.testing.assert_array_equal(crop(view, roi, 64), crop(np.ascontiguousarray(view), roi, 64))
