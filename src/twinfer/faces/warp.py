"""The bilinear affine warp behind every face crop: OpenCV's `warpAffine` when OpenCV is installed and the frame
is uint8, a numpy warp otherwise (serving must not need OpenCV; the `video` extra brings it).

Why two: the numpy warp (four gathers from the flattened frame) cost 4.5-8 ms per 192x192 crop on this machine,
more than the landmark model itself; `cv2.warpAffine` is what MediaPipe's CPU ImageToTensor calls (uint8 warp with
BORDER_REPLICATE, then scaled to float), so it is both faster and closer to MediaPipe. It works in fixed point
(1/32-pixel positions and weights, uint8 out), so its values differ from the numpy warp's by at most about one
grey level; the landmark and iris models do not notice (tests/unit/test_face_warp.py). Pillow's affine transform
has no replicate border, so it cannot stand in for either.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Literal

import numpy as np

Border = Literal["replicate", "zero"]
WarpBackend = Literal["auto", "numpy"]


@functools.cache
def opencv() -> ModuleType | None:
    """cv2 when importable (once per process), else None. OpenCV's own thread pool is limited to one thread: a
    crop is far too small to split, and the server's parallelism comes from many streams on worker threads."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(1)
    return cv2


def crop(image: np.ndarray, matrix: np.ndarray, size: int, border: Border = "replicate",
         backend: WarpBackend = "auto") -> np.ndarray:
    """size x size (x C) float32 samples of an HxW(xC) image: output pixel (u, v) reads the image at
    `matrix @ (u, v, 1)` in pixel-index coordinates (centres at integers), bilinearly; outside the image the
    `border` rule applies. Image units are kept (0..255 for uint8 frames). `backend="numpy"` forces the numpy
    warp (exact float weights)."""
    if backend == "auto" and image.dtype == np.uint8 and opencv() is not None:
        return crop_opencv(image, matrix, size, border)
    return crop_numpy(image, matrix, size, border)


def crop_opencv(image: np.ndarray, matrix: np.ndarray, size: int, border: Border = "replicate") -> np.ndarray:
    cv2 = opencv()
    if cv2 is None:
        raise RuntimeError("OpenCV is not installed (pip install twinfer[video])")
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    out = cv2.warpAffine(np.ascontiguousarray(image), np.asarray(matrix, dtype=np.float64), (size, size),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=mode, borderValue=0)
    if image.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing axis of 1
        out = out[..., None]
    return out.astype(np.float32)


def crop_numpy(image: np.ndarray, matrix: np.ndarray, size: int, border: Border = "replicate") -> np.ndarray:
    height, width = image.shape[:2]
    m = np.asarray(matrix, dtype=np.float32)
    steps = np.arange(size, dtype=np.float32)
    u, v = steps[None, :], steps[:, None]
    # float32: exact enough for 8-bit frames up to 4K wide
    x = m[0, 0] * u + m[0, 1] * v + m[0, 2]
    y = m[1, 0] * u + m[1, 1] * v + m[1, 2]
    x0f, y0f = np.floor(x), np.floor(y)
    fx, fy = (x - x0f)[..., None], (y - y0f)[..., None]
    x0, y0 = x0f.astype(np.intp), y0f.astype(np.intp)
    source = (image if image.ndim == 3 else image[..., None]).reshape(height * width, -1)
    cols = (np.clip(x0, 0, width - 1), np.clip(x0 + 1, 0, width - 1))
    rows = (np.clip(y0, 0, height - 1) * width, np.clip(y0 + 1, 0, height - 1) * width)
    taps = []
    for dy in (0, 1):
        for dx in (0, 1):  # one gather per tap from the flattened frame (faster than 2-D fancy indexing)
            values = np.take(source, rows[dy] + cols[dx], axis=0).astype(np.float32)
            if border == "zero":
                inside = (x0 + dx >= 0) & (x0 + dx < width) & (y0 + dy >= 0) & (y0 + dy < height)
                values *= inside[..., None]
            taps.append(values)
    top = taps[0] + (taps[1] - taps[0]) * fx
    bottom = taps[2] + (taps[3] - taps[2]) * fx
    out = (top + (bottom - top) * fy).astype(np.float32, copy=False)
    return out if image.ndim == 3 else out[..., 0]
