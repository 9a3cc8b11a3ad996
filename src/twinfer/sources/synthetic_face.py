"""A procedural grayscale face whose features follow ARKit blendshape values, rendered with numpy.

One renderer serves two jobs: it feeds `twinfer stream --source synthetic` (values that move smoothly over time)
and it generates the training data of `twinfer train face-blendshapes` (random values, random nuisances). Because a
model is trained on these images, the nuisances matter as much as the shapes: head pose (yaw, pitch, roll), scale
and shift, a directional light over a shaded face, background, contrast and sensor noise all vary, so the only way
to predict the driving values is to look at the features they move.

Conventions: images are what a camera facing the person sees (not mirrored), so the person's *Left* eye, brow and
mouth corner are on the image's right. Values are clipped to [0, 1]. Rendering is anti-aliased (soft edges one
pixel wide), so a small change of a value always changes the image a little: learnable, not quantised away.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# The shapes the renderer draws; the trained model learns exactly these (the other ARKit shapes stay 0).
DRIVEN = (
    "eyeBlinkLeft", "eyeBlinkRight", "eyeWideLeft", "eyeWideRight",
    "browInnerUp", "browDownLeft", "browDownRight",
    "jawOpen", "mouthSmileLeft", "mouthSmileRight", "mouthFunnel", "mouthPucker",
    "cheekPuff",
)


@dataclass(frozen=True, slots=True)
class Scene:
    """Everything that is not an expression: where the head is, how it is lit, how the camera sees it.

    Angles in radians (yaw > 0 turns the face to the image's right), shift in fractions of the image size,
    light_angle the direction the light comes from in the image plane, light_strength 0 (flat) to 1.
    """

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    light_angle: float = -2.4
    light_strength: float = 0.35
    skin: float = 0.68
    background: float = 0.16
    contrast: float = 1.0
    noise: float = 0.0
    noise_seed: int = 0

    @classmethod
    def random(cls, rng: np.random.Generator) -> Scene:
        """A plausible webcam scene: the head roughly centred, turned a little, lit from anywhere."""
        return cls(
            yaw=float(rng.uniform(-0.45, 0.45)), pitch=float(rng.uniform(-0.3, 0.3)),
            roll=float(rng.uniform(-0.3, 0.3)), scale=float(rng.uniform(0.85, 1.12)),
            shift_x=float(rng.uniform(-0.06, 0.06)), shift_y=float(rng.uniform(-0.06, 0.06)),
            light_angle=float(rng.uniform(-math.pi, math.pi)), light_strength=float(rng.uniform(0.0, 0.6)),
            skin=float(rng.uniform(0.5, 0.85)), background=float(rng.uniform(0.0, 0.45)),
            contrast=float(rng.uniform(0.7, 1.2)), noise=float(rng.uniform(0.0, 0.05)),
            noise_seed=int(rng.integers(2**31)),
        )


def random_expression(rng: np.random.Generator) -> dict[str, float]:
    """Training values: each shape independently 0 (30 %), fully on (10 %) or anywhere in between, so the model
    sees neutral faces, extremes and every mix. An eye blinks or widens, not both (a closed eye shows no width, so
    that pair would be unlearnable, and faces do not do it)."""
    values = {}
    for name in DRIVEN:
        roll = rng.random()
        values[name] = 0.0 if roll < 0.3 else 1.0 if roll < 0.4 else float(rng.random())
    for side in ("Left", "Right"):
        values[f"eyeWide{side}" if rng.random() < 0.5 else f"eyeBlink{side}"] = 0.0
    return values


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in image units: x, y in [-1, 1], y down."""
    c = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    return np.meshgrid(c, c)


def _coverage(inside: np.ndarray, pixel: float) -> np.ndarray:
    """Soft mask from a signed distance (negative inside, in face units): 1 inside, 0 outside, a one-pixel ramp."""
    return np.clip(0.5 - inside / pixel, 0.0, 1.0)


def _ellipse_distance(u: np.ndarray, v: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (exact on the axes, close enough elsewhere)."""
    rx, ry = max(rx, 1e-4), max(ry, 1e-4)
    return (np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2) - 1.0) * min(rx, ry)


def _paint(image: np.ndarray, alpha: np.ndarray, value: float | np.ndarray) -> None:
    image *= 1.0 - alpha
    image += alpha * value


def render_face(values: dict[str, float], size: int = 128, scene: Scene | None = None,
                as_float: bool = False) -> np.ndarray:
    """A size x size grayscale face posed by `values` (missing shapes are 0) in `scene` (default: frontal, clean).

    Returns uint8 (what a camera sends), or float32 in [0, 1] with `as_float` (the same quantisation is applied,
    so training sees exactly what a stream delivers).
    """
    s = scene or Scene()
    v = {name: min(max(float(values.get(name, 0.0)), 0.0), 1.0) for name in DRIVEN}
    x, y = _grid(size)
    # Image -> face coordinates: undo shift, scale and roll. The face spans about [-0.62, 0.62] x [-0.8, 0.8].
    cos_r, sin_r = math.cos(s.roll), math.sin(s.roll)
    xs, ys = (x - 2 * s.shift_x) / s.scale, (y - 2 * s.shift_y) / s.scale
    u = cos_r * xs + sin_r * ys
    w = -sin_r * xs + cos_r * ys
    pixel = 2.0 / size / s.scale  # one pixel in face units

    # Yaw and pitch as a cheap 3-D effect: features sit in front of the head's centre, so they move further than
    # the outline when the head turns, and the side turning away is foreshortened.
    yaw_shift, pitch_shift = 0.32 * math.sin(s.yaw), 0.28 * math.sin(s.pitch)
    squash = 1.0 - 0.25 * abs(math.sin(s.yaw))

    def feature_u(cx: float) -> float:
        return cx * squash * (1.0 - 0.35 * math.sin(s.yaw) * np.sign(cx)) + yaw_shift

    image = np.full((size, size), s.background, np.float32)
    image += (0.12 * y).astype(np.float32)  # a background that is not flat either

    def window(cx: float, cy: float, radius: float) -> tuple[slice, slice]:
        """The image rows/columns a feature of `radius` (face units) around (cx, cy) can touch: drawing only
        there makes a frame ~4x cheaper than drawing every feature over the whole image."""
        xi = (cos_r * cx - sin_r * cy) * s.scale + 2 * s.shift_x
        yi = (sin_r * cx + cos_r * cy) * s.scale + 2 * s.shift_y
        r = radius * s.scale + 4.0 / size
        lo_x, hi_x = math.floor((xi - r + 1) * size / 2), math.ceil((xi + r + 1) * size / 2) + 1
        lo_y, hi_y = math.floor((yi - r + 1) * size / 2), math.ceil((yi + r + 1) * size / 2) + 1
        return slice(max(lo_y, 0), max(min(hi_y, size), 0)), slice(max(lo_x, 0), max(min(hi_x, size), 0))

    # Head: an ellipse widened at the cheeks by cheekPuff and lengthened by jawOpen; shaded as an ellipsoid.
    head_rx = 0.62 * squash + 0.11 * v["cheekPuff"] * np.exp(-((w - 0.25) / 0.3) ** 2)
    head_ry = np.where(w > 0, 0.8 + 0.1 * v["jawOpen"], 0.8)
    uc = u - 0.4 * yaw_shift
    head = _coverage((np.sqrt((uc / head_rx) ** 2 + (w / head_ry) ** 2) - 1.0) * 0.6, pixel)
    nx, ny = np.clip(uc / head_rx, -1, 1), np.clip(w / head_ry, -1, 1)
    nz = np.sqrt(np.clip(1.0 - nx**2 - ny**2, 0.0, 1.0))
    lx, ly = math.cos(s.light_angle), math.sin(s.light_angle)
    shade = s.skin * (1.0 - s.light_strength + s.light_strength * np.clip(0.55 * nz + 0.6 * (nx * lx + ny * ly)
                                                                            + 0.25, 0.0, 1.2))
    _paint(image, head, shade.astype(np.float32))

    # Cheeks puffed: two brighter, rounder highlights.
    for side in (-1.0, 1.0):
        cx, cy = feature_u(side * 0.36), 0.22 + pitch_shift * 0.5
        rows, cols = window(cx, cy, 0.3)
        cheek = _coverage(_ellipse_distance(u[rows, cols], w[rows, cols], cx, cy, 0.13 + 0.06 * v["cheekPuff"],
                                            0.12 + 0.05 * v["cheekPuff"]), pixel * 4)
        _paint(image[rows, cols], cheek * (0.15 + 0.45 * v["cheekPuff"]), min(s.skin * 1.25, 1.0))

    # Nose: a darker wedge that shows where the head points.
    cx, cy = feature_u(0.0) + 0.04 * math.sin(s.yaw), 0.1 + pitch_shift
    rows, cols = window(cx, cy, 0.25)
    nose = _coverage(_ellipse_distance(u[rows, cols], w[rows, cols], cx, cy, 0.05, 0.16), pixel * 2)
    _paint(image[rows, cols], nose * 0.35, s.skin * 0.55)

    # Eyes (person's Left on the image's right): white, iris, lids; blink closes, wide opens further.
    for side, name in ((1.0, "Left"), (-1.0, "Right")):
        cx, cy = feature_u(side * 0.28), -0.17 + pitch_shift
        rows, cols = window(cx, cy, 0.22)
        uu, ww, view = u[rows, cols], w[rows, cols], image[rows, cols]
        openness = (1.0 - v[f"eyeBlink{name}"]) * (1.0 + 0.75 * v[f"eyeWide{name}"])
        half_h = max(0.075 * openness, 0.004)
        rx = 0.13 * (1.0 - 0.3 * math.sin(s.yaw) * side)
        socket_ = _coverage(_ellipse_distance(uu, ww, cx, cy, rx * 1.15, 0.11 + 0.03 * v[f"eyeWide{name}"]),
                            pixel * 3)
        _paint(view, socket_ * 0.4, s.skin * 0.75)
        eye = _ellipse_distance(uu, ww, cx, cy, rx, half_h)
        white = _coverage(eye, pixel)
        _paint(view, white, 0.95)
        iris = _coverage(_ellipse_distance(uu, ww, cx + 0.05 * math.sin(s.yaw), cy, 0.045, 0.045), pixel) * white
        _paint(view, iris, 0.12)
        lid = _coverage(np.maximum(np.abs(eye) - 0.008, np.abs(uu - cx) - rx), pixel)
        _paint(view, lid, 0.2)

    # Brows: a band whose inner end rises with browInnerUp and whose whole length drops with browDown.
    for side, name in ((1.0, "Left"), (-1.0, "Right")):
        cx = feature_u(side * 0.28)
        rows, cols = window(cx, -0.36 + pitch_shift, 0.25)
        uu, ww = u[rows, cols], w[rows, cols]
        half_len = 0.15 * (1.0 - 0.3 * math.sin(s.yaw) * side)
        t = np.clip((uu - cx) / half_len * side, -1.0, 1.0)  # -1 at the inner end, +1 at the outer end
        inner = (1.0 - t) / 2.0
        line_y = (-0.36 + pitch_shift - 0.1 * v["browInnerUp"] * inner + 0.1 * v[f"browDown{name}"] * (0.4 + inner)
                  - 0.02 * (1 - t**2))
        dist = np.maximum(np.abs(ww - line_y) - 0.022, np.abs(uu - cx) - half_len)
        _paint(image[rows, cols], _coverage(dist, pixel), 0.15)

    # Mouth, three ways to change it that must not look alike: jawOpen drops the mouth and opens it tall; a funnel
    # opens it round and narrow with lighter, flared lips; a pucker closes it small behind thick, pushed-out lips.
    # Each corner rises with its own smile.
    smile_l, smile_r = v["mouthSmileLeft"], v["mouthSmileRight"]
    funnel, pucker, jaw = v["mouthFunnel"], v["mouthPucker"], v["jawOpen"]
    mcx, mcy = feature_u(0.0), 0.42 + pitch_shift + 0.09 * jaw
    rows, cols = window(mcx, mcy + 0.05, 0.38)
    uu, ww, view = u[rows, cols], w[rows, cols], image[rows, cols]
    half_w = 0.21 * (1.0 + 0.3 * (smile_l + smile_r) / 2 - 0.5 * pucker - 0.45 * funnel) * squash
    rel = (uu - mcx) / half_w
    corner_lift = np.where(rel > 0, smile_l, smile_r) * 0.09 * np.clip(rel, -1.2, 1.2) ** 2
    centre_y = mcy - corner_lift
    open_amount = (0.012 + 0.17 * jaw + 0.1 * funnel) * (1.0 - 0.75 * pucker)
    half_open = open_amount * np.sqrt(np.clip(1.0 - rel**2, 0.0, 1.0))
    lip = 0.022 + 0.05 * pucker + 0.02 * funnel
    lips = _coverage(np.maximum(np.abs(ww - centre_y) - half_open - lip, np.abs(rel) * half_w - half_w - lip * 0.5),
                     pixel)
    _paint(view, lips, min(s.skin * (0.6 + 0.35 * funnel), 1.0))
    opening = _coverage(np.maximum(np.abs(ww - centre_y) - half_open, np.abs(rel) * half_w - half_w * 0.97), pixel)
    _paint(view, opening * min(1.0, 0.35 + 6 * open_amount), 0.05)

    # Camera: contrast around mid-grey, sensor noise, 8-bit quantisation.
    image = (image - 0.5) * s.contrast + 0.5
    if s.noise > 0:
        image += np.random.default_rng(s.noise_seed).normal(0.0, s.noise, image.shape).astype(np.float32)
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return pixels.astype(np.float32) / 255.0 if as_float else pixels


def expression_at(t: float, seed: int = 0) -> dict[str, float]:
    """Smoothly varying driving values at time t (seconds): every shape drifts on its own slow wave (3-9 s
    periods), and both eyes blink quickly every 3 s or so. As in the training data an eye does not widen while
    it blinks (a closed eye shows no width): its eyeWide fades out over the blink."""
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * math.pi, len(DRIVEN))
    speeds = rng.uniform(0.11, 0.33, len(DRIVEN))
    values = {name: 0.5 - 0.5 * math.cos(t * speed * 2 * math.pi + phase)
              for name, speed, phase in zip(DRIVEN, speeds, phases)}
    blink = max(0.0, math.sin(t * 2 * math.pi / 3.1 + phases[0])) ** 8
    blink = blink if blink > 0.01 else 0.0
    for side in ("Left", "Right"):
        values[f"eyeBlink{side}"] = blink
        values[f"eyeWide{side}"] *= max(0.0, 1.0 - 20.0 * blink)
    return values


def scene_at(t: float) -> Scene:
    """A head that sways gently (a few degrees), as a person in front of a webcam does."""
    return Scene(yaw=0.2 * math.sin(t * 0.7), pitch=0.1 * math.sin(t * 0.53 + 1.0), roll=0.08 * math.sin(t * 0.41),
                 noise=0.01, noise_seed=int(t * 1000) & 0x7FFFFFFF)


def synthetic_frames(fps: float, size: int = 256, seed: int = 0) -> Iterator[tuple[np.ndarray, dict[str, float]]]:
    """Endless (uint8 frame, driving values) pairs at the given frame rate's time steps."""
    n = 0
    while True:
        t = n / fps
        values = expression_at(t, seed)
        yield render_face(values, size, scene_at(t)), values
        n += 1


def training_batch(rng: np.random.Generator, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (count, 1, size, size), targets float32 (count, len(DRIVEN))) of random faces in random
    scenes: the training and held-out data of the face model."""
    images = np.empty((count, 1, size, size), np.float32)
    targets = np.empty((count, len(DRIVEN)), np.float32)
    for i in range(count):
        values = random_expression(rng)
        images[i, 0] = render_face(values, size, Scene.random(rng), as_float=True)
        targets[i] = [values[name] for name in DRIVEN]
    return images, targets
