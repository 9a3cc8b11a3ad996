"""`twinfer stream` sources read real files through OpenCV: the test writes its own video and PNG with OpenCV and
checks the frames the source yields (count, size, order, colour, looping); and the local errors are one line."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from twinfer.errors import ConfigError
from twinfer.streaming.frame_sources import open_source

cv2 = pytest.importorskip("cv2")

W, H, N = 48, 32, 6
LEVELS = [20 + 40 * i for i in range(N)]  # frame i is grey level LEVELS[i] in red, a marker MJPEG keeps


def write_video(path, fourcc: str = "MJPG") -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (W, H))
    assert writer.isOpened()
    for level in LEVELS:
        bgr = np.zeros((H, W, 3), np.uint8)
        bgr[..., 2] = level  # red in OpenCV's BGR
        writer.write(bgr)
    writer.release()


def test_video_frames_come_in_order_as_rgb_of_the_file_size_and_loop(tmp_path):
    path = tmp_path / "clip.avi"
    write_video(path)
    frames = [frame for frame, driving in itertools.islice(open_source(f"video:{path}", fps=30), 2 * N + 2)]
    assert len(frames) == 2 * N + 2
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)
    reds = [int(round(f[..., 0].mean())) for f in frames]
    greens_blues = max(float(f[..., 1:].mean()) for f in frames)
    assert greens_blues < 6  # RGB order: the red channel carries the marker
    expected = LEVELS + LEVELS + LEVELS[:2]  # looped back to the first frame after the last
    assert all(abs(r - e) <= 6 for r, e in zip(reds, expected)), (reds, expected)


def test_image_repeats_one_picture(tmp_path):
    path = tmp_path / "face.png"
    bgr = np.zeros((H, W, 3), np.uint8)
    bgr[:, : W // 2] = (255, 0, 0)  # left half blue
    assert cv2.imwrite(str(path), bgr)
    frames = list(itertools.islice(open_source(f"image:{path}", fps=60), 5))
    assert len(frames) == 5 and all(driving is None for _, driving in frames)
    first = frames[0][0]
    assert first.shape == (H, W, 3)
    assert tuple(first[0, 0]) == (0, 0, 255) and tuple(first[0, -1]) == (0, 0, 0)  # converted to RGB (PNG: exact)
    assert all(np.array_equal(f, first) for f, _ in frames)


@pytest.mark.parametrize("spec, words", [
    ("video:{missing}", "no such file"),
    ("image:{missing}", "no such file"),
    ("image:{text}", "not an image OpenCV can read"),
    ("video:{text}", "OpenCV cannot open it|no frame could be read"),
    ("video:", "name a file"),
    ("camera:front", "expected camera:N"),
    ("webcam", "expected synthetic, image:FILE, video:FILE or camera:N"),
])
def test_bad_sources_are_one_line_config_errors(tmp_path, spec, words):
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(ConfigError, match=words) as info:
        open_source(spec.format(missing=tmp_path / "nope.avi", text=text), fps=30)
    assert "\n" not in str(info.value)


def test_synthetic_is_still_the_default_kind():
    frame, driving = next(open_source("synthetic", fps=30, size=64))
    assert frame.shape[:2] == (64, 64) and driving is not None
