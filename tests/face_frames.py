"""The fixed real-face frame sequence that twinfer's tracker and MediaPipe's own face mesh are compared on (the
parity fixture, tests/data/faces/mediapipe_reference.npz) and benchmarked on (bench/faces.py).

The recipe, in order, every frame 512 x 512 RGB uint8 from scikit-image's `astronaut`:
- in-plane turns about the face centre (222, 122) of -30, -20, -10, 0, +10, +20, +30 degrees (clockwise on
  screen for negative angles in image coordinates: `Image.rotate` turns counter-clockwise for positive angles);
- the portrait mirrored left-right, then mirrored and turned +20;
- scaled 0.7 about the face centre and shifted by (+60, +80) pixels; scaled 1.3 and shifted by (-30, -20);
- JPEG quality 30; Gaussian noise (sigma 8, seed 15) then JPEG quality 20.
Each variant is shown `REPEATS` frames in a row, as a camera would, so a tracker in video mode settles on it. The
turns follow each other as a head turning 10 degrees a frame (tracked from frame to frame); before a variant that
moves the face elsewhere (`cut`) comes one black frame, a scene cut: both trackers lose the face there and detect it
again on the next frame (without it MediaPipe keeps tracking a half-face region after the mirror jump). Only Pillow
and numpy make the frames (not twinfer's own crop code, so changing twinfer cannot change its reference), outside
pixels black. `frame_digest` condenses the frames into a few
numbers so a test notices when another Pillow or libjpeg makes different pixels from the recorded ones.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

SIZE = 512
FACE_CENTRE = (222.0, 122.0)
REPEATS = 3


@dataclass(frozen=True)
class Variant:
    name: str
    angle_deg: float = 0.0         # Image.rotate's angle: counter-clockwise on screen
    mirrored: bool = False
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    jpeg_quality: int | None = None
    noise_sigma: float = 0.0
    cut: bool = False              # a black frame before it


VARIANTS: tuple[Variant, ...] = (
    *(Variant(f"roll_{a:+d}", angle_deg=a) for a in (-30, -20, -10, 0, 10, 20, 30)),
    Variant("mirror", mirrored=True, cut=True),
    Variant("mirror_roll_+20", angle_deg=20, mirrored=True),
    Variant("scale_0.7_shift", scale=0.7, shift=(60.0, 80.0), cut=True),
    Variant("scale_1.3_shift", scale=1.3, shift=(-30.0, -20.0), cut=True),
    Variant("jpeg_30", jpeg_quality=30, cut=True),
    Variant("noise_8_jpeg_20", jpeg_quality=20, noise_sigma=8.0),
)


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def render(image: Image.Image, v: Variant) -> np.ndarray:
    """One variant of the portrait as a 512 x 512 x 3 uint8 frame."""
    frame = image.convert("RGB")
    if v.mirrored:
        frame = frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    centre = (SIZE - FACE_CENTRE[0], FACE_CENTRE[1]) if v.mirrored else FACE_CENTRE
    if v.angle_deg:
        frame = frame.rotate(v.angle_deg, resample=Image.BILINEAR, center=centre)
    if v.scale != 1.0 or v.shift != (0.0, 0.0):
        # output pixel p samples the input at centre + (p - centre - shift) / scale
        s, (dx, dy) = 1.0 / v.scale, v.shift
        cx, cy = centre
        data = (s, 0.0, cx - s * (cx + dx), 0.0, s, cy - s * (cy + dy))
        frame = frame.transform((SIZE, SIZE), Image.Transform.AFFINE, data=data, resample=Image.BILINEAR)
    pixels = np.asarray(frame, dtype=np.uint8)
    if v.noise_sigma:
        noise = np.random.default_rng(15).normal(0.0, v.noise_sigma, pixels.shape)
        pixels = np.clip(pixels + noise, 0, 255).round().astype(np.uint8)
    if v.jpeg_quality is not None:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=v.jpeg_quality)
        pixels = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(pixels)


def reference_frames() -> tuple[list[str], np.ndarray]:
    """(name of each frame's variant, frames (N, 512, 512, 3) uint8) in the order a tracker is shown them; the
    black frames of the cuts are named "cut"."""
    image = astronaut()
    names: list[str] = []
    frames: list[np.ndarray] = []
    for v in VARIANTS:
        if v.cut:
            names.append("cut")
            frames.append(np.zeros((SIZE, SIZE, 3), np.uint8))
        frame = render(image, v)
        names += [v.name] * REPEATS
        frames += [frame] * REPEATS
    return names, np.stack(frames)


def frame_digest(frames: np.ndarray) -> np.ndarray:
    """Per frame: the mean of each colour channel (N, 3), float64: a cheap check that the pixels are the same."""
    return frames.reshape(len(frames), -1, 3).mean(axis=1)


CHEEKS = (234, 454)  # the face oval's leftmost and rightmost points: the face width


def landmark_errors(names: list[str], reference: np.ndarray,
                    ours: list[np.ndarray | None]) -> dict[str, list[float]]:
    """Per variant, per frame where both found the face: the mean 2-D distance of the 468 points over the face
    width (MediaPipe's cheek-to-cheek distance in that frame)."""
    errors: dict[str, list[float]] = {}
    for name, theirs, mine in zip(names, reference, ours):
        if mine is None or np.isnan(theirs[0, 0]):
            continue
        width = np.linalg.norm(theirs[CHEEKS[1], :2] - theirs[CHEEKS[0], :2])
        distance = np.linalg.norm(np.asarray(mine)[:468, :2] - theirs[:, :2], axis=1).mean()
        errors.setdefault(name, []).append(float(distance / width))
    return errors
