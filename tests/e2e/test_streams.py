"""Streams end to end: a real server, real UDP sockets, python-osc as the VMC receiver, struct for Live Link."""

from __future__ import annotations

import random
import socket
import threading
import time

import numpy as np
import pytest

from tests.e2e.conftest import wait_until
from tests.e2e.vmc_receiver import VmcReceiver
from tests.support import parse_live_link_with_struct
from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.client import Client
from twinfer.client.streams import StreamSender, target
from twinfer.demo_models import build_repository
from twinfer.protocol import game_pb2
from twinfer.sources.synthetic_face import synthetic_frames
from twinfer.streaming import datagram as dg

pytestmark = pytest.mark.e2e


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    return sock


@pytest.fixture
def face_server(tmp_path, server_factory):
    repo = tmp_path / "repo"
    build_repository(repo)
    server = server_factory(repo, "--insecure-dev", env={"TWINFER_STREAM_HEARTBEAT_TIMEOUT_S": "2"})
    yield server
    assert server.stop() == 0


def send_at(sender: StreamSender, fps: float, seconds: float) -> int:
    """Send synthetic frames paced at `fps` for `seconds`; returns how many were sent."""
    frames = synthetic_frames(fps)
    start = time.monotonic()
    sent = 0
    while sent < int(fps * seconds):
        delay = start + sent / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the capture clock, not waiting for a result
        image, _ = next(frames)
        sender.send_frame(image)
        sent += 1
    return sent


def test_vmc_receiver_gets_every_shape_of_nearly_every_frame_at_60fps(face_server):
    receiver = VmcReceiver()
    try:
        with Client("127.0.0.1", face_server.tcp) as client:
            sender = StreamSender(client, "face_blendshapes", 256, 256,
                                  targets=[target("vmc", f"127.0.0.1:{receiver.port}")])
            assert sender.labels == list(ARKIT_BLENDSHAPES)
            began = time.monotonic()
            sent = send_at(sender, 60, 5)
            sending = time.monotonic() - began
            wait_until(lambda: len(receiver.frames) >= 0.9 * sent, timeout=10, what="90% of frames at the receiver")
            sender.close()
        frames = receiver.frames
        assert len(frames) >= 0.9 * sent
        complete = [f for f in frames if f.fresh == set(ARKIT_BLENDSHAPES)]  # every shape arrived in the frame
        assert len(complete) >= 0.9 * sent
        for frame in frames:
            assert set(frame.values) == set(ARKIT_BLENDSHAPES)
            assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in frame.values.values())
            assert frame.status == [1, 0, 0, 1] and frame.bones == {}  # a plain model: tracked, no face bones
        assert max(receiver.sizes) <= 1200 and all(receiver.ends_with_apply)  # each bundle useful alone (#19)
        times = [f.t for f in frames]
        assert times == sorted(times) and times[0] >= 0  # seconds since the stream's first frame (capture clock)
        assert 0.9 * sending <= times[-1] <= sending + 0.05
    finally:
        receiver.close()


def test_live_link_packet_parses_with_struct(face_server):
    sock = udp_socket()
    with Client("127.0.0.1", face_server.tcp) as client:
        sender = StreamSender(client, "face_blendshapes", 128, 96, pixel_format="RGB8",
                              targets=[game_pb2.StreamTarget(kind="livelink", host="127.0.0.1",
                                                             port=sock.getsockname()[1], subject="Stage Left")])
        sender.send_frame(np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8))
        packet, _ = sock.recvfrom(65535)
        sender.close()
    version, device, subject, frame, sub_frame, numerator, denominator, count, values = \
        parse_live_link_with_struct(packet)  # checks the packet ends right after its `count` floats
    assert (version, subject, count, numerator, denominator) == (6, "Stage Left", 61, 60, 1)
    assert device.startswith("twinfer-") and frame > 0 and 0 <= sub_frame < 1
    assert all(0.0 <= v <= 1.0 for v in values[:52]) and any(v > 0 for v in values[:52])
    assert values[52:] == (0.0,) * 9


def test_forged_replayed_oversized_and_random_datagrams_are_dropped_and_the_stream_goes_on(face_server):
    sock = udp_socket()
    port = sock.getsockname()[1]
    with Client("127.0.0.1", face_server.tcp) as client:
        sender = StreamSender(client, "face_blendshapes", 64, 64, targets=[target("native", f"127.0.0.1:{port}")])
        udp = (sender.info.udp_host, sender.info.udp_port)
        image = np.full((64, 64), 128, np.uint8)
        sender.send_frame(image)
        first = game_pb2.StreamResult.FromString(sock.recvfrom(65535)[0])
        assert first.sequence == 1 and len(first.values) == 52 and first.stream_id == sender.stream_id
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        key = bytes(sender.info.key)
        good = dg.fragment_frame(key, sender.stream_id, 2, time.time_ns(), image.tobytes(), 65000)[0]
        forged = dg.fragment_frame(b"x" * 32, sender.stream_id, 3, time.time_ns(), image.tobytes(), 65000)[0]
        raw.sendto(good, udp)
        assert game_pb2.StreamResult.FromString(sock.recvfrom(65535)[0]).sequence == 2
        raw.sendto(good, udp)  # replay
        raw.sendto(forged, udp)
        raw.sendto(b"\x01" + bytes(60), udp)  # right version, wrong everything else
        raw.sendto(bytes(np.random.default_rng(2).integers(0, 255, 500, dtype=np.uint8)), udp)
        raw.sendto(b"\x01" * 65500, udp)  # oversized for the server's 65000-byte limit
        raw.sendto(dg.fragment_frame(key, 99999, 1, 0, b"abc", 65000)[0], udp)  # unknown stream
        sender._sequence = iter(range(10, 10_000))  # noqa: SLF001 - skip ahead past the replayed numbers
        sender.send_frame(image)
        assert game_pb2.StreamResult.FromString(sock.recvfrom(65535)[0]).sequence == 10

        def dropped() -> dict[str, float]:
            import urllib.request

            text = urllib.request.urlopen(f"http://{face_server.http}/metrics", timeout=10).read().decode()
            out = {}
            for line in text.splitlines():
                if line.startswith("twinfer_stream_datagrams_dropped_total{"):
                    out[line.split('reason="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
            return out

        counts = wait_until(lambda: (d := dropped()) and sum(d.values()) >= 6 and d, what="drops counted")
        assert counts["replayed"] >= 1 and counts["forged"] >= 1 and counts["oversized"] >= 1
        assert counts["malformed"] >= 1 and counts["unknown_stream"] >= 1
        sender.close()


def test_two_receivers_get_every_frame_and_the_model_ran_once_per_frame(face_server):
    a, b = udp_socket(), udp_socket()
    with Client("127.0.0.1", face_server.tcp) as client:
        sender = StreamSender(client, "face_blendshapes", 64, 64,
                              targets=[target("native", f"127.0.0.1:{a.getsockname()[1]}")])
        assert sender.subscribe(target("native", f"127.0.0.1:{b.getsockname()[1]}")) == 2
        image = np.zeros((64, 64), np.uint8)
        for i in range(20):
            sender.send_frame(image)
            got_a = game_pb2.StreamResult.FromString(a.recvfrom(65535)[0]).sequence
            got_b = game_pb2.StreamResult.FromString(b.recvfrom(65535)[0]).sequence
            assert got_a == got_b == i + 1  # one at a time, so nothing is skipped
        assert sender.unsubscribe(target("native", f"127.0.0.1:{b.getsockname()[1]}")) == 1
        sender.close()
    import tritonclient.http as httpclient

    stats = httpclient.InferenceServerClient(face_server.http).get_inference_statistics("face_blendshapes")
    assert stats["model_stats"][0]["inference_count"] == 20


def test_silent_stream_is_closed_and_heartbeats_keep_one_alive(face_server):
    with Client("127.0.0.1", face_server.tcp) as client:
        alive = StreamSender(client, "face_blendshapes", 32, 32)
        silent = StreamSender(client, "face_blendshapes", 32, 32)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            alive.heartbeat()
            time.sleep(0.2)  # heartbeat period of the capture client
        from twinfer.errors import StreamNotFound

        with pytest.raises(StreamNotFound):
            client.close_stream(silent.stream_id)
        alive.close()


def test_cli_stream_into_cli_receive(face_server):
    import os
    import subprocess
    import sys

    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    probe = udp_socket()
    port = probe.getsockname()[1]
    probe.close()  # a free port for the receiver
    receiver = subprocess.Popen([sys.executable, "-m", "twinfer", "receive", "--vmc", str(port), "--seconds", "4"],
                                stdout=subprocess.PIPE, text=True, env=env)
    try:
        wait_until(lambda: receiver.stdout.readline().startswith("listening"), what="receiver up")
        stream = subprocess.run(
            [sys.executable, "-m", "twinfer", "stream", "--server", f"127.0.0.1:{face_server.tcp}", "--fps", "30",
             "--seconds", "2", "--vmc", f"127.0.0.1:{port}", "--smoothing"],
            capture_output=True, text=True, timeout=60, env=env)
        assert stream.returncode == 0, stream.stderr
        done = stream.stdout.strip().splitlines()[-1]
        assert done.startswith("done: sent 60, received") and "latency p50" in done
        received = int(done.split("received ")[1].split(" ")[0])
        assert received >= 54
        out, _ = receiver.communicate(timeout=20)
    finally:
        if receiver.poll() is None:
            receiver.kill()
    assert "52 shapes" in out


def test_jpeg_frames_stream_too(face_server):
    import io

    from PIL import Image

    sock = udp_socket()
    buffer = io.BytesIO()
    Image.fromarray(next(synthetic_frames(60))[0]).save(buffer, format="JPEG", quality=80)
    with Client("127.0.0.1", face_server.tcp) as client:
        sender = StreamSender(client, "face_blendshapes", 256, 256, pixel_format="JPEG",
                              targets=[target("native", f"127.0.0.1:{sock.getsockname()[1]}")])
        sender.send_frame(buffer.getvalue())
        result = game_pb2.StreamResult.FromString(sock.recvfrom(65535)[0])
        sender.close()
    assert result.sequence == 1 and len(result.values) == 52 and list(result.labels) == list(ARKIT_BLENDSHAPES)


def test_receivers_from_config_get_every_stream(tmp_path, server_factory):
    repo = tmp_path / "repo"
    build_repository(repo)
    listener = udp_socket()
    server = server_factory(repo, "--insecure-dev",
                            env={"TWINFER_STREAM_RECEIVERS": f'["native:127.0.0.1:{listener.getsockname()[1]}"]'})
    with Client("127.0.0.1", server.tcp) as client:
        sender = StreamSender(client, "face_blendshapes", 32, 32)  # asks for no receiver itself
        sender.send_frame(np.zeros((32, 32), np.uint8))
        result = game_pb2.StreamResult.FromString(listener.recvfrom(65535)[0])
        sender.close()
    assert result.stream_id == sender.stream_id and len(result.values) == 52
    assert server.stop() == 0


def test_calibrate_over_the_wire_names_the_model_when_it_tracks_no_face(face_server):
    from twinfer.errors import InvalidInput, StreamNotFound

    with Client("127.0.0.1", face_server.tcp) as client:
        sender = StreamSender(client, "face_blendshapes", 32, 32)
        with pytest.raises(InvalidInput, match="model face_blendshapes does not track faces") as info:
            sender.calibrate(2.0)
        assert info.value.code == game_pb2.ERROR_CODE_INVALID_INPUT
        with pytest.raises(StreamNotFound):
            client.calibrate(sender.stream_id + 1000, 2.0)
        sender.close()


def test_cli_streams_a_video_file_into_cli_receive_livelink(tmp_path, face_server):
    import os
    import subprocess
    import sys

    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "face.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    frames = synthetic_frames(10, size=96)
    for _ in range(7):  # fewer frames than are sent: the file loops
        writer.write(cv2.cvtColor(next(frames)[0][:64], cv2.COLOR_GRAY2BGR))
    writer.release()
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    receiver = subprocess.Popen([sys.executable, "-m", "twinfer", "receive", "--livelink", "0", "--seconds", "4"],
                                stdout=subprocess.PIPE, text=True, env=env)
    try:
        first = receiver.stdout.readline()
        assert first.startswith("listening for Live Link Face on 127.0.0.1:"), first
        port = first.split(":")[1].split(" ")[0]
        stream = subprocess.run(
            [sys.executable, "-m", "twinfer", "stream", "--server", f"127.0.0.1:{face_server.tcp}",
             "--source", f"video:{video}", "--fps", "20", "--seconds", "1.5", "--livelink", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, env=env)
        assert stream.returncode == 0, stream.stderr
        lines = stream.stdout.strip().splitlines()
        assert lines[0].startswith("stream ") and "96x64 RGB8 at 20 fps -> face_blendshapes, 1 receiver(s)" in lines[0]
        assert lines[-1].startswith("done: sent 30, received")
        out, _ = receiver.communicate(timeout=20)
    finally:
        if receiver.poll() is None:
            receiver.kill()
    shown = [line for line in out.splitlines() if "head yaw" in line]
    assert shown and all("twinfer | head yaw   +0 pitch   +0 roll   +0 deg" in line for line in shown)  # no face model
    assert max(float(line.split(" fps")[0]) for line in shown) >= 10


def test_cli_calibrate_on_a_model_without_faces_is_one_line(face_server):
    import os
    import subprocess
    import sys

    stream = subprocess.run(
        [sys.executable, "-m", "twinfer", "stream", "--server", f"127.0.0.1:{face_server.tcp}", "--seconds", "1",
         "--calibrate-seconds", "2"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    assert stream.returncode == 1
    assert stream.stderr == ("twinfer: InvalidInput: model face_blendshapes does not track faces; calibration "
                             "needs face_tracker\n")


class LossyRelay:
    """Forwards UDP datagrams to `target`, dropping each with probability `loss` (seeded): the kernel has no netem."""

    def __init__(self, target: int, loss: float, seed: int = 19) -> None:
        self.sock = udp_socket()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.target, self.loss, self.random = ("127.0.0.1", target), loss, random.Random(seed)
        self.forwarded = self.dropped = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if self.random.random() < self.loss:
                self.dropped += 1
            else:
                self.forwarded += 1
                self.sock.sendto(data, self.target)

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def test_vmc_frames_survive_a_lossy_link_bundle_by_bundle(face_server):
    """Issue #19: with 30 % of datagrams lost, a frame still lands whenever any of its bundles does (about
    1 - 0.3^3 = 97 % of frames, against 70 % when only a last bundle's Apply counted), and the receiver's table
    never misses a shape once it has seen them all."""
    receiver = VmcReceiver()
    relay = LossyRelay(receiver.port, loss=0.3)
    try:
        with Client("127.0.0.1", face_server.tcp) as client:
            sender = StreamSender(client, "face_blendshapes", 64, 64,
                                  targets=[target("vmc", f"127.0.0.1:{relay.port}")])
            image = np.zeros((64, 64), np.uint8)
            sent = 120
            for i in range(sent):  # one frame at a time, so none is skipped: each makes its 3 bundles
                sender.send_frame(image)
                wait_until(lambda: relay.forwarded + relay.dropped >= 3 * (i + 1), what=f"frame {i + 1}'s bundles")
            sender.close()
        assert relay.forwarded + relay.dropped == 3 * sent
        wait_until(lambda: len(receiver.sizes) == relay.forwarded, what="the receiver read every relayed bundle")
        frames = [f for f in receiver.frames if f.arrived > 0]
        assert relay.dropped > 0.2 * (relay.forwarded + relay.dropped)
        assert len(frames) >= 0.9 * sent, (len(frames), sent)
        assert all(receiver.ends_with_apply)
        first_full = next(i for i, f in enumerate(frames) if set(f.values) == set(ARKIT_BLENDSHAPES))
        assert all(set(f.values) == set(ARKIT_BLENDSHAPES) for f in frames[first_full:])
    finally:
        relay.close()
        receiver.close()
