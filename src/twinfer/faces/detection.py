"""BlazeFace short range in numpy: the frame -> detector tensor, and the detector's outputs -> face detections.

The options are MediaPipe's, from modules/face_detection/face_detection_short_range.pbtxt and
face_detection.pbtxt (the wheel ships them only compiled into its binary graphs):
- input: the frame letterboxed to a square (centred, zero border), 128 x 128, RGB scaled to [-1, 1];
- SSD anchors: 4 layers, strides 8, 16, 16, 16, aspect ratio 1 plus one interpolated anchor per layer, fixed
  anchor size, offset 0.5; layers of one stride share a grid, so 16x16x2 + 8x8x6 = 896 anchors;
- decoding: 16 values per anchor, box centre x, y, width, height then 6 keypoints (x, y), all divided by 128 and
  relative to the anchor centre; score = sigmoid(logit clipped to +-100), kept at >= 0.5;
- weighted non-maximum suppression, IoU threshold 0.3: each kept face averages the boxes and keypoints of the
  candidates it suppresses, weighted by their scores.
Keypoints, in MediaPipe's order: the subject's right eye, left eye, nose tip, mouth centre, right ear tragion,
left ear tragion (on an unmirrored camera image the subject's right eye is on the image's left).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from twinfer.faces.roi import Roi, crop

INPUT_SIZE = 128
NUM_ANCHORS = 896
MIN_SCORE = 0.5
SCORE_CLIP = 100.0
NMS_IOU = 0.3
RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH, RIGHT_EAR, LEFT_EAR = range(6)


@dataclass(frozen=True)
class Detection:
    """One face in frame pixels: score in (0, 1], box (xmin, ymin, xmax, ymax), keypoints 6 x 2."""

    score: float
    box: np.ndarray
    keypoints: np.ndarray

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


@lru_cache(maxsize=1)
def anchors() -> np.ndarray:
    """896 x 2 anchor centres in [0, 1] (width and height are 1: fixed anchor size), in the model's order."""
    strides = (8, 16, 16, 16)
    centres: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        per_cell = 0
        while layer < len(strides) and strides[layer] == stride:
            per_cell += 2  # aspect ratio 1.0 and the interpolated anchor
            layer += 1
        cells = INPUT_SIZE // stride
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres)


def letterbox_roi(frame_width: int, frame_height: int) -> Roi:
    """The square ROI MediaPipe's keep_aspect_ratio letterbox covers: centred, the frame's long side."""
    side = float(max(frame_width, frame_height))
    return Roi(frame_width / 2.0, frame_height / 2.0, side, side, 0.0)


def detector_input(frame: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8 RGB frame -> the 128x128x3 float32 tensor in [-1, 1] (add the batch axis to send it).

    The numpy warp, not OpenCV's: its exact weights keep the detector's validated scores (skimage's cat reads
    0.498 with them and 0.501 with OpenCV's 1/32-step fixed point, at the 0.5 threshold), and the detector runs only
    while no face is tracked, so the tracked frame's cost is not here."""
    height, width = frame.shape[:2]
    square = crop(frame, letterbox_roi(width, height), INPUT_SIZE, border="zero", backend="numpy")
    return square * np.float32(2.0 / 255.0) - np.float32(1.0)


def decode(regressors: np.ndarray, classificators: np.ndarray, frame_width: int, frame_height: int,
           min_score: float = MIN_SCORE) -> list[Detection]:
    """One image's outputs (896 x 16 and 896 x 1, a leading batch axis of 1 allowed) -> faces, best first."""
    raw = np.asarray(regressors, dtype=np.float64).reshape(NUM_ANCHORS, 16)
    logits = np.clip(np.asarray(classificators, dtype=np.float64).reshape(NUM_ANCHORS), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.nonzero(scores >= min_score)[0]
    if keep.size == 0:
        return []
    centre = anchors()[keep]
    values = raw[keep] / INPUT_SIZE
    box_centre = values[:, 0:2] + centre
    half = values[:, 2:4] / 2.0
    boxes = np.concatenate([box_centre - half, box_centre + half], axis=1)
    keypoints = values[:, 4:16].reshape(-1, 6, 2) + centre[:, None, :]
    faces = weighted_nms(scores[keep], boxes, keypoints)
    letterbox = letterbox_roi(frame_width, frame_height)
    origin = np.array([letterbox.cx - letterbox.width / 2, letterbox.cy - letterbox.height / 2])
    return [Detection(score, np.concatenate([b[:2] * letterbox.width + origin, b[2:] * letterbox.width + origin]),
                      k * letterbox.width + origin) for score, b, k in faces]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (xmin, ymin, xmax, ymax) box with each of `boxes`."""
    low = np.maximum(box[:2], boxes[:, :2])
    high = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray,
                 threshold: float = NMS_IOU) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's WEIGHTED suppression: the best remaining candidate absorbs every candidate overlapping it by
    more than `threshold` IoU; the face is their score-weighted mean box and keypoints, with the best score."""
    order = np.argsort(-scores, kind="stable")
    remaining = order
    out: list[tuple[float, np.ndarray, np.ndarray]] = []
    while remaining.size:
        best = remaining[0]
        overlap = iou(boxes[best], boxes[remaining])
        group = remaining[overlap > threshold]
        group = group if group.size else remaining[:1]
        weights = scores[group][:, None]
        total = float(weights.sum())
        box = (boxes[group] * weights).sum(axis=0) / total
        points = (keypoints[group] * weights[:, :, None]).sum(axis=0) / total
        out.append((float(scores[best]), box, points))
        remaining = remaining[overlap <= threshold]
    return out
