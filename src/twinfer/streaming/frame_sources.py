"""Where `twinfer stream` gets its frames: synthetic | image:FILE | video:FILE | camera:N.

Every source yields (frame, driving values) forever (the caller stops after --seconds): frames are uint8 GRAY
(H, W) or RGB (H, W, 3), all of one size; driving values are the blendshapes a synthetic face was rendered with and
None for real pictures. Real pictures come through OpenCV (the `video` extra, opencv-python-headless), imported
only when such a source is asked for, so the rest of twinfer runs without it. Problems are ConfigErrors with one
line for the user: a missing file is a local error, never "cannot reach the server".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from twinfer.errors import ConfigError

Frames = Iterator[tuple[np.ndarray, dict[str, float] | None]]
SOURCES = "synthetic, image:FILE, video:FILE or camera:N"


def _cv2(spec: str) -> Any:
    try:
        import cv2
    except ImportError:
        raise ConfigError(f"--source {spec}: needs OpenCV: pip install 'twinfer[video]' "
                          "(opencv-python-headless)") from None
    return cv2


def _existing_file(spec: str, arg: str) -> Path:
    if not arg:
        raise ConfigError(f"--source {spec!r}: name a file, e.g. {spec.partition(':')[0]}:face.png")
    path = Path(arg)
    if not path.is_file():
        raise ConfigError(f"--source {spec}: no such file")
    return path


def open_source(spec: str, fps: float, size: int = 256) -> Frames:
    """The frames of `spec`; raises ConfigError at once (before any connection) when the source cannot be read."""
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        from twinfer.sources.synthetic_face import synthetic_frames

        return synthetic_frames(fps, size=size)
    if kind == "image":
        return image_frames(spec, _existing_file(spec, arg))
    if kind == "video":
        return video_frames(spec, _existing_file(spec, arg))
    if kind == "camera":
        if not arg.isdigit():
            raise ConfigError(f"--source {spec!r}: expected camera:N, N the camera's index (0 = the first)")
        return camera_frames(spec, int(arg))
    raise ConfigError(f"--source {spec!r}: expected {SOURCES}")


def image_frames(spec: str, path: Path) -> Frames:
    """One picture, repeated (the caller paces it at --fps)."""
    cv2 = _cv2(spec)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ConfigError(f"--source {spec}: not an image OpenCV can read")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    rgb.setflags(write=False)  # the same array every frame: nobody may change it

    def frames() -> Frames:
        while True:
            yield rgb, None

    return frames()


def _reader(spec: str, open_capture: Callable[[], Any], loop: bool) -> Frames:
    """Frames of an OpenCV capture; a file starts again from its first frame at its end (reopened: seeking is
    unreliable across codecs), a camera that stops ends the source."""
    cv2 = _cv2(spec)
    capture = open_capture()
    if not capture.isOpened():
        raise ConfigError(f"--source {spec}: OpenCV cannot open it")
    ok, image = capture.read()
    if not ok:
        capture.release()
        raise ConfigError(f"--source {spec}: no frame could be read")
    shape = image.shape

    def frames() -> Frames:
        nonlocal capture, ok, image
        try:
            while True:
                if not ok:
                    if not loop:
                        return
                    capture.release()
                    capture = open_capture()
                    ok, image = capture.read()
                    if not ok:
                        return  # the file went away or broke: end rather than spin
                if image.shape != shape:
                    raise ConfigError(f"--source {spec}: frame size changed from {shape[1]}x{shape[0]} to "
                                      f"{image.shape[1]}x{image.shape[0]}")
                yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB), None
                ok, image = capture.read()
        finally:
            capture.release()

    return frames()


def video_frames(spec: str, path: Path) -> Frames:
    """The file's frames in order, looping (the caller plays them at --fps for --seconds)."""
    cv2 = _cv2(spec)
    return _reader(spec, lambda: cv2.VideoCapture(str(path)), loop=True)


def camera_frames(spec: str, index: int) -> Frames:
    cv2 = _cv2(spec)
    return _reader(spec, lambda: cv2.VideoCapture(index), loop=False)
