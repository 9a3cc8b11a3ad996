"""Rotated regions of interest and the bilinear warp that crops them, in numpy (no OpenCV needed to serve).

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
from typing import Literal

import numpy as np

Border = Literal["replicate", "zero"]


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


def crop(image: np.ndarray, roi: Roi, size: int, border: Border = "replicate", flip: bool = False) -> np.ndarray:
    """Sample `roi` of an HxWxC image into a size x size x C float32 crop (bilinear; image units kept).

    `border`: outside the frame, repeat the edge pixels (MediaPipe's BORDER_REPLICATE, for landmark crops) or
    read zeros (BORDER_ZERO, the detector's letterbox). `flip` mirrors the crop horizontally (the iris model
    sees every eye as the side it was trained on)."""
    height, width = image.shape[:2]
    grid = ((np.arange(size, dtype=np.float32) + 0.5) / size - 0.5)
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    gx = (-grid if flip else grid)[None, :]
    gy = grid[:, None]
    # pixel-index coordinates (centres at integers), float32: exact enough for 8-bit frames up to 4K wide
    cx, cy, w, h = (np.float32(v) for v in (roi.cx - 0.5, roi.cy - 0.5, roi.width, roi.height))
    x = cx + np.float32(c) * w * gx - np.float32(s) * h * gy
    y = cy + np.float32(s) * w * gx + np.float32(c) * h * gy
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
