"""`twinfer stream` and `twinfer receive` refuse bad local input in one line, before any network (no server runs
here: a port nobody listens on would answer "cannot reach the server" if the check came too late)."""

from __future__ import annotations

import socket

import pytest

from twinfer.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, words", [
    (["--fps", "0"], "--fps 0: expected a number of frames per second above 0"),
    (["--fps", "nan"], "--fps nan"),
    (["--seconds", "-1"], "--seconds -1"),
    (["--source", "video:/no/such/clip.mp4"], "--source video:/no/such/clip.mp4: no such file"),
    (["--source", "image:/no/such/face.png"], "no such file"),
    (["--source", "camera:x"], "expected camera:N"),
    (["--calibrate-seconds", "0"], "--calibrate-seconds 0: expected 0 < seconds <= 60"),
    (["--calibrate-seconds", "61"], "--calibrate-seconds 61"),
    (["--jpeg", "0"], "--jpeg 0: expected a quality from 1 to 100"),
    (["--jpeg", "101"], "--jpeg 101"),
    (["--jpeg", "80", "--pixel-format", "RGBA8"], "--jpeg and --pixel-format: choose one"),
    (["--vmc", "127.0.0.1:notaport"], "--vmc '127.0.0.1:notaport': expected HOST:PORT"),
    (["--server", "nohostport"], "--server 'nohostport': expected HOST:PORT"),
])
def test_stream_local_errors_are_one_line_and_exit_2(capsys, args, words):
    code = main(["stream", "--server", f"127.0.0.1:{free_port()}", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("twinfer: ") and words in err and err.count("\n") == 1, err
    assert "cannot reach the server" not in err


def test_stream_to_a_server_that_is_not_there_says_so_in_one_line(capsys):
    assert main(["stream", "--server", f"127.0.0.1:{free_port()}", "--seconds", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("twinfer: cannot reach the server") and err.count("\n") == 1


def test_receive_takes_exactly_one_of_vmc_and_livelink(capsys):
    with pytest.raises(SystemExit):
        main(["receive"])
    with pytest.raises(SystemExit):
        main(["receive", "--vmc", "1", "--livelink", "2"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_source_frames_in_each_raw_pixel_format():
    import numpy as np

    from twinfer.streaming.capture import as_pixel_format
    from twinfer.streaming.pixels import frame_pixels

    rgb = np.random.default_rng(3).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    for fmt in ("RGB8", "RGBA8", "BGRA8"):
        wire = as_pixel_format(rgb, fmt)
        assert wire.shape == (4, 5, 4 if fmt != "RGB8" else 3)
        np.testing.assert_array_equal(frame_pixels(wire.tobytes(), fmt, 5, 4), rgb)  # the server reads it back
    grey = as_pixel_format(rgb, "GRAY8")
    expected = (rgb.astype(float) @ [0.299, 0.587, 0.114]).round()
    np.testing.assert_array_equal(grey, expected.astype(np.uint8))
    np.testing.assert_array_equal(as_pixel_format(grey, "RGBA8")[..., 3], 255)
