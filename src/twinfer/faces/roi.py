"""Rotated regions of interest and the crops of them (the warp itself is twinfer.faces.warp).

Coordinates are continuous frame pixels, x right and y down: pixel (i, j) covers [i, i+1) x [j, j+1), so its
centre is (i + 0.5, j + 0.5). A `Roi` is MediaPipe's NormalizedRect in pixels: a centre, a width and height and a
rotation (radians; positive turns the crop's x axis from the frame's x axis towards its y axis, i.e. clockwise on
screen). A crop of N x N samples the ROI at the centres of an N x N grid, so crop coordinates u in [0, N] map to
the frame by `Roi.to_frame` and back by `Roi.to_crop`: the same map MediaPipe's ImageToTensor / LandmarkProjection
pair uses, which keeps landmarks where the models put them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from twinfer.faces import warp
from twinfer.faces.warp import Border, WarpBackend


@dataclass(frozen=True)
class Roi:
    """A rotated rectangle in frame pixels."""

    cx: float
    cy: float
    width: float
    height: float
    rotation: float = 0.0

    def axes(self) -> np.ndarray:
        """2x2: columns are the crop's unit x and y axes in frame coordinates."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        return np.array([[c, -s], [s, c]])

    def to_frame(self, points: np.ndarray, crop_size: int, flipped: bool = False) -> np.ndarray:
        """Crop pixel coordinates (..., 2+) -> frame pixels; any z column is scaled like x (width / crop_size).

        `flipped`: the points come from a horizontally mirrored crop (x -> crop_size - x first)."""
        points = np.asarray(points, dtype=np.float64)
        xy = points[..., :2].copy()
        if flipped:
            xy[..., 0] = crop_size - xy[..., 0]
        offset = (xy / crop_size - 0.5) * np.array([self.width, self.height])
        out = points.copy()
        out[..., :2] = offset @ self.axes().T + np.array([self.cx, self.cy])
        if points.shape[-1] > 2:
            out[..., 2:] = points[..., 2:] * (self.width / crop_size)
        return out

    def to_crop(self, points: np.ndarray, crop_size: int) -> np.ndarray:
        """Frame pixels (..., 2) -> crop pixel coordinates (the inverse of `to_frame` for x, y)."""
        offset = (np.asarray(points, dtype=np.float64)[..., :2] - np.array([self.cx, self.cy])) @ self.axes()
        return (offset / np.array([self.width, self.height]) + 0.5) * crop_size


def rotation_between(start: np.ndarray, end: np.ndarray, target: float = 0.0) -> float:
    """MediaPipe's DetectionsToRects rotation: the angle that turns the start->end vector to `target` (radians)."""
    dx, dy = float(end[0] - start[0]), float(end[1] - start[1])
    return normalize_radians(target + math.atan2(dy, dx))


def normalize_radians(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def square_roi(cx: float, cy: float, width: float, height: float, rotation: float, scale: float) -> Roi:
    """MediaPipe's RectTransformation with square_long: the long side, squared, times `scale`."""
    side = max(width, height) * scale
    return Roi(cx, cy, side, side, rotation)


def crop(image: np.ndarray, roi: Roi, size: int, border: Border = "replicate", flip: bool = False,
         backend: WarpBackend = "auto") -> np.ndarray:
    """Sample `roi` of an HxWxC image into a size x size x C float32 crop (bilinear; image units kept).

    `border`: outside the frame, repeat the edge pixels (MediaPipe's BORDER_REPLICATE, for landmark crops) or
    read zeros (BORDER_ZERO, the detector's letterbox). `flip` mirrors the crop horizontally (the iris model
    sees every eye as the side it was trained on). With OpenCV installed, uint8 frames go through
    `cv2.warpAffine` (what MediaPipe's own CPU ImageToTensor does: ~20x faster than numpy here); the numpy warp
    is the fallback, so serving does not need OpenCV; `backend="numpy"` forces it."""
    return warp.crop(image, crop_to_frame(roi, size, flip), size, border, backend)


def crop_to_frame(roi: Roi, size: int, flip: bool = False) -> np.ndarray:
    """2x3 affine: crop pixel indices (u, v) -> frame pixel-index coordinates (centres at integers), sampling the
    ROI at the centres of a size x size grid (`flip` mirrors the crop's x)."""
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    sign = -1.0 if flip else 1.0
    ax, ay = sign * roi.width / size, roi.height / size   # frame units per crop pixel along the crop's x and y
    g0 = 0.5 / size - 0.5                                  # the first sample's offset from the centre, in sides
    gx0 = sign * g0
    x0 = roi.cx - 0.5 + c * roi.width * gx0 - s * roi.height * g0
    y0 = roi.cy - 0.5 + s * roi.width * gx0 + c * roi.height * g0
    return np.array([[c * ax, -s * ay, x0], [s * ax, c * ay, y0]], dtype=np.float64)
