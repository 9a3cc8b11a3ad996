"""A procedural grayscale face whose features follow ARKit blendshape values, rendered with numpy.

For demos and tests of the streaming path (`twinfer stream --source synthetic`): the expressions move smoothly
over time, so a receiver sees values change. The training work will extend this renderer with more shapes, head
pose, lighting and noise so a model can learn the mapping.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

DRIVEN = ("eyeBlinkLeft", "eyeBlinkRight", "jawOpen", "mouthSmileLeft", "mouthSmileRight", "browInnerUp")


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / max(ry, 1e-3)) ** 2 + ((xx - cx) / max(rx, 1e-3)) ** 2 <= 1.0


def render_face(values: dict[str, float], size: int = 256) -> np.ndarray:
    """A size x size uint8 image of a face posed by `values` (missing shapes are 0)."""
    v = {name: float(np.clip(values.get(name, 0.0), 0.0, 1.0)) for name in DRIVEN}
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    s = size / 256.0
    image = np.full((size, size), 30, np.uint8)
    image[_ellipse(yy, xx, 128 * s, 128 * s, 110 * s, 88 * s)] = 170  # face
    for side, cx in (("Left", 92 * s), ("Right", 164 * s)):
        openness = 1.0 - v[f"eyeBlink{side}"]
        image[_ellipse(yy, xx, 100 * s, cx, max(12 * s * openness, 1.0 * s), 18 * s)] = 250  # eye white
        if openness > 0.2:
            image[_ellipse(yy, xx, 100 * s, cx, 6 * s * openness, 6 * s)] = 20  # pupil
        brow_y = (72 - 14 * v["browInnerUp"]) * s
        image[_ellipse(yy, xx, brow_y, cx, 3 * s, 20 * s)] = 60  # brow
    jaw = v["jawOpen"]
    smile = (v["mouthSmileLeft"] + v["mouthSmileRight"]) / 2
    mouth_w = (30 + 14 * smile) * s
    image[_ellipse(yy, xx, (175 + 8 * jaw) * s, 128 * s, (4 + 22 * jaw) * s, mouth_w)] = 40  # mouth
    for sign, name in ((-1, "mouthSmileLeft"), (1, "mouthSmileRight")):  # mouth corners rise with the smile
        image[_ellipse(yy, xx, (172 - 12 * v[name]) * s, 128 * s + sign * mouth_w, 4 * s, 6 * s)] = 40
    return image


def expression_at(t: float, seed: int = 0) -> dict[str, float]:
    """Smoothly varying driving values at time t (seconds); blinks are quick, the rest drift."""
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * math.pi, len(DRIVEN))
    speeds = rng.uniform(0.3, 0.9, len(DRIVEN))
    values = {name: 0.5 + 0.5 * math.sin(t * speed * 2 * math.pi + phase)
              for name, speed, phase in zip(DRIVEN, speeds, phases)}
    blink = max(0.0, math.sin(t * 2 * math.pi / 3.0 + phases[0])) ** 16  # a blink every 3 s
    values["eyeBlinkLeft"] = values["eyeBlinkRight"] = blink
    return values


def synthetic_frames(fps: float, size: int = 256, seed: int = 0) -> Iterator[tuple[np.ndarray, dict[str, float]]]:
    """Endless (frame, driving values) pairs at the given frame rate's time steps."""
    n = 0
    while True:
        values = expression_at(n / fps, seed)
        yield render_face(values, size), values
        n += 1
