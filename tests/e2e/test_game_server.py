"""The real server process, real sockets, real ONNX Runtime sessions and the real Python client."""

from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading

import numpy as np
import onnxruntime as ort
import pytest

from tests.e2e.conftest import wait_until
from tests.support import build_matmul_relu, make_repository, tiny_reference
from twinfer.client import Client
from twinfer.errors import InvalidInput, ModelNotFound, Unauthenticated
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import FrameDecoder, encode_frame
from twinfer.security.tokens import TokenAuthority

pytestmark = pytest.mark.e2e
E = game_pb2.ErrorCode


def read_replies(sock: socket.socket, want: int = 1, timeout: float = 10.0) -> list[game_pb2.ServerMessage] | None:
    """Read until `want` server messages arrive; None when the server closed first."""
    sock.settimeout(timeout)
    decoder, out = FrameDecoder(), []
    while len(out) < want:
        data = sock.recv(65536)
        if not data:
            return out or None
        for _, body in decoder.feed(data):
            msg = game_pb2.ServerMessage()
            msg.ParseFromString(body)
            out.append(msg)
    return out


def closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def test_foreign_model_directory_matches_in_process_onnxruntime(tmp_path, server_factory):
    repo = make_repository(tmp_path / "repo")  # only tiny/1/model.onnx: no config anywhere
    server = server_factory(repo, "--insecure-dev")
    x = np.random.default_rng(3).standard_normal((5, 16)).astype(np.float32)
    session = ort.InferenceSession(str(repo / "tiny" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    [expected] = session.run(["OUTPUT0"], {"INPUT0": x})
    with Client("127.0.0.1", server.tcp) as client:
        out = client.infer("tiny", {"INPUT0": x})
        np.testing.assert_allclose(out["OUTPUT0"], expected, rtol=1e-6, atol=1e-6)
        meta = client.model_metadata("tiny")
        assert [list(t.shape) for t in meta.inputs] == [[-1, 16]] and meta.max_batch_size == 64
        [status] = client.models()
        assert (status.name, status.state, list(status.versions)) == ("tiny", "READY", ["1"])
        assert client.ping() >= 0
        with pytest.raises(InvalidInput):
            client.infer("tiny", {"INPUT0": x.astype(np.float64)})
        with pytest.raises(ModelNotFound):
            client.infer("nope", {"INPUT0": x})
        futures = [client.infer_async("tiny", {"INPUT0": x[i : i + 1]}) for i in range(5)]
        pipelined = np.concatenate([f.result(timeout=10)["OUTPUT0"] for f in futures])
        np.testing.assert_allclose(pipelined, expected, rtol=1e-6, atol=1e-6)
    assert server.stop() == 0


def test_garbage_gets_errors_or_disconnects_and_others_keep_being_served(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev", env={"TWINFER_IDLE_TIMEOUT_S": "1.5"})
    x = np.ones((1, 16), np.float32)
    served: list[bool] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def bystander() -> None:
        with Client("127.0.0.1", server.tcp) as client:
            while not stop.wait(0.05):
                try:
                    out = client.infer("tiny", {"INPUT0": x})["OUTPUT0"]
                    served.append(bool(np.allclose(out, tiny_reference(x), rtol=1e-5)))
                except BaseException as exc:  # noqa: BLE001 - every failure counts
                    errors.append(exc)
                    return

    thread = threading.Thread(target=bystander)
    thread.start()
    try:
        wait_until(lambda: served, what="the bystander's first answer")
        # Random bytes: either a typed error or a disconnect, never a crash.
        rng = random.Random(7)
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", server.tcp)) as sock:
                sock.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))))
                sock.shutdown(socket.SHUT_WR)
                assert closed_by_server(sock)
        # A header declaring 2 GiB: FRAME_TOO_LARGE, then closed.
        with socket.create_connection(("127.0.0.1", server.tcp)) as sock:
            sock.sendall(struct.pack(">IH", 2 * 1024**3, 0))
            [reply] = read_replies(sock)
            assert reply.kicked.code == E.ERROR_CODE_FRAME_TOO_LARGE
            assert closed_by_server(sock)
        # An unknown message type and a wrong shape: typed errors, the connection stays usable.
        with socket.create_connection(("127.0.0.1", server.tcp)) as sock:
            sock.sendall(encode_frame(b"\x08\x04\x9a\x06\x00"))
            bad = game_pb2.ClientMessage(request_id=5)
            bad.infer.model = "tiny"
            bad.infer.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 3], data=b"\0" * 12)
            sock.sendall(encode_frame(bad.SerializeToString()))
            first, second = read_replies(sock, want=2)
            assert first.error.code == E.ERROR_CODE_UNKNOWN_MESSAGE
            assert (second.request_id, second.error.code) == (5, E.ERROR_CODE_INVALID_INPUT)
        # Half a frame, then silence: the server drops it at the idle timeout.
        with socket.create_connection(("127.0.0.1", server.tcp)) as half:
            half.sendall(encode_frame(b"\x08\x01\x5a\x00")[:5])
            [kick] = read_replies(half, timeout=15)
            assert kick.kicked.code == E.ERROR_CODE_IDLE_TIMEOUT
            assert closed_by_server(half)
        count = len(served)
        wait_until(lambda: len(served) > count + 3, what="the bystander still being served")
    finally:
        stop.set()
        thread.join(20)
    assert errors == [] and all(served)
    assert server.stop() == 0


def test_hot_reload_under_steady_traffic_loses_nothing(tmp_path, server_factory):
    repo = tmp_path / "repo"
    w1 = np.eye(16, dtype=np.float32)
    w2 = 2 * np.eye(16, dtype=np.float32)
    build_matmul_relu(repo / "tiny" / "1" / "model.onnx", w1)
    server = server_factory(repo, "--insecure-dev", "--repository-poll", "0.1")
    x = np.abs(np.random.default_rng(5).standard_normal((1, 16))).astype(np.float32)
    seen: list[tuple[str, float]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def steady_traffic(client: Client) -> None:
        while not stop.is_set():
            try:
                futures = [client.infer_async("tiny", {"INPUT0": x}) for _ in range(4)]
                for f in futures:
                    out = f.result(timeout=10)["OUTPUT0"]
                    seen.append(("v2" if np.allclose(out, 2 * x) else "v1" if np.allclose(out, x) else "?", 0))
            except BaseException as exc:  # noqa: BLE001 - every failure counts
                errors.append(exc)
                return

    with Client("127.0.0.1", server.tcp) as client:
        worker = threading.Thread(target=steady_traffic, args=(client,))
        worker.start()
        wait_until(lambda: len(seen) > 200, what="traffic on version 1")
        staging = tmp_path / "staging"
        build_matmul_relu(staging / "model.onnx", w2)
        shutil.move(str(staging), str(repo / "tiny" / "2"))  # appears whole, as a deploy tool would do it
        wait_until(lambda: seen and seen[-1][0] == "v2", timeout=30, what="responses from version 2")
        count = len(seen)
        wait_until(lambda: len(seen) > count + 200, what="more traffic after the swap")
        stop.set()
        worker.join(20)
        assert client.models()[0].versions == ["2"]
    assert errors == []
    labels = [label for label, _ in seen]
    assert "?" not in labels
    switch = labels.index("v2")
    assert set(labels[:switch]) == {"v1"} and labels[switch:].count("v1") <= 8  # requests queued before the swap
    assert server.stop() == 0


def test_auth_with_real_tokens_and_duplicate_login(tmp_path, server_factory):
    secret = "e2e-secret"
    server = server_factory(make_repository(tmp_path / "repo"), env={"TWINFER_AUTH__TOKEN_SECRET": secret})
    authority = TokenAuthority(secret)
    with pytest.raises(Unauthenticated):
        Client("127.0.0.1", server.tcp, token=TokenAuthority("wrong").issue("eve", 0))
    with Client("127.0.0.1", server.tcp, token=authority.issue("ann", 0)) as ann:
        assert ann.infer("tiny", {"INPUT0": np.ones((1, 16), np.float32)})["OUTPUT0"].shape == (1, 16)
    with socket.create_connection(("127.0.0.1", server.tcp)) as sock:
        msg = game_pb2.ClientMessage(request_id=1)
        msg.list_models.SetInParent()
        sock.sendall(encode_frame(msg.SerializeToString()))
        [reply] = read_replies(sock)
        assert reply.error.code == E.ERROR_CODE_UNAUTHENTICATED
    assert server.stop() == 0


def test_cli_models_and_infer_against_a_running_server(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev")
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    target = f"127.0.0.1:{server.tcp}"
    models = subprocess.run([sys.executable, "-m", "twinfer", "models", "--server", target],
                            capture_output=True, text=True, timeout=60, env=env)
    assert models.returncode == 0, models.stderr
    assert models.stdout.split()[:3] == ["tiny", "READY", "versions=1"]
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    np.save(tmp_path / "x.npy", x)
    for spec in (f"INPUT0={tmp_path / 'x.npy'}", "INPUT0=" + str(x.tolist())):
        run = subprocess.run([sys.executable, "-m", "twinfer", "infer", "tiny", "--server", target, "--input", spec],
                             capture_output=True, text=True, timeout=60, env=env)
        assert run.returncode == 0, run.stderr
        import json

        out = json.loads(run.stdout)["outputs"]["OUTPUT0"]
        np.testing.assert_allclose(np.array(out["data"], np.float32), tiny_reference(x), rtol=1e-5, atol=1e-6)
    bad = subprocess.run([sys.executable, "-m", "twinfer", "infer", "nope", "--server", target, "--input", "a=[1]"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 1 and "ModelNotFound" in bad.stderr
    assert server.stop() == 0


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_never_reads_is_paused_not_buffered(tmp_path, server_factory):
    """Pipelined requests whose answers are never read: the server stops reading that peer once its write buffer
    is full (memory stays flat) and keeps serving everyone else."""
    from twinfer.client import messages

    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev")
    frame = messages.build_infer(1, "tiny", {"INPUT0": np.ones((1, 16), np.float32)})
    with Client("127.0.0.1", server.tcp) as bystander:
        bystander.infer("tiny", {"INPUT0": np.ones((1, 16), np.float32)})
        before = _rss_mb(server.process.pid)
        flood = socket.create_connection(("127.0.0.1", server.tcp))
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        finished = threading.Event()

        def send_all() -> None:
            try:
                chunk = frame * 1000
                for _ in range(200):  # 200,000 requests, about 20 MB of answers if they were all buffered
                    flood.sendall(chunk)
            except OSError:
                pass
            finished.set()

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        assert not finished.wait(3), "the server read every request although nobody read the answers"
        grown = _rss_mb(server.process.pid) - before
        x = np.full((1, 16), 0.5, np.float32)
        np.testing.assert_allclose(bystander.infer("tiny", {"INPUT0": x})["OUTPUT0"], tiny_reference(x), rtol=1e-5)
        flood.close()
        sender.join(10)
    assert grown < 8, f"server memory grew by {grown:.1f} MB"
    assert server.stop() == 0
