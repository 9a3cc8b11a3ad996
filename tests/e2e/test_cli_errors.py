"""#18 item 4: the mistakes a new user makes are one line on stderr, no traceback, and a local problem never reads
as "cannot reach the server". Each case runs the real CLI as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import numpy as np
import pytest

from tests.support import build_matmul_relu

pytestmark = pytest.mark.e2e

ENV = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
ENV = {k: v for k, v in ENV.items() if not k.startswith("TWINFER_")}


def twinfer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twinfer", *args], capture_output=True, text=True, timeout=60,
                          env=ENV)


def one_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    """The single stderr line of a failed run, holding every expected text (gRPC's own C-core lines excepted)."""
    assert result.returncode not in (0, None), result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and " add_port.cc:" not in line]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr + result.stdout
    assert len(lines) == 1 and lines[0].startswith("twinfer: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert "cannot reach the server" not in lines[0]
    return lines[0]


SERVE = ("--host", "127.0.0.1", "--tcp-port", "0", "--udp-port", "0", "--http-port", "0", "--grpc-port", "0",
         "--metrics-port", "0", "--insecure-dev")


def test_a_missing_model_repository(tmp_path):
    one_line(twinfer("serve", "--model-repository", str(tmp_path / "nowhere"), *SERVE), "does not exist")


def test_a_file_given_as_the_model_repository(tmp_path):
    (tmp_path / "models").write_text("")
    one_line(twinfer("serve", "--model-repository", str(tmp_path / "models"), *SERVE), "is a file")


@pytest.mark.parametrize("flag", ["--tcp-port", "--http-port", "--grpc-port"])
def test_a_port_already_in_use(tmp_path, flag):
    build_matmul_relu(tmp_path / "repo" / "tiny" / "1" / "model.onnx", np.eye(16))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = list(SERVE)
        args[args.index(flag) + 1] = str(port)
        result = twinfer("serve", "--model-repository", str(tmp_path / "repo"), *args)
    assert result.returncode == 2
    one_line(result, f"cannot listen on 127.0.0.1:{port}", flag)


def test_stream_at_zero_fps():
    one_line(twinfer("stream", "--server", "127.0.0.1:9", "--source", "synthetic", "--fps", "0"), "--fps 0")


def test_a_missing_input_file_is_not_a_network_problem(tmp_path):
    # Nothing listens on port 9: the old order connected first and said "cannot reach the server".
    missing = tmp_path / "missing.npy"
    one_line(twinfer("infer", "tiny", "--server", "127.0.0.1:9", "--input", f"INPUT0={missing}"),
             f"--input INPUT0: no file {missing}")


def test_receive_with_a_compare_file_in_a_missing_folder(tmp_path):
    one_line(twinfer("receive", "--vmc", "0", "--seconds", "30", "--compare", str(tmp_path / "no" / "sent.jsonl")),
             "--compare", "no folder")


def test_a_latency_threshold_without_a_unit_is_refused():
    one_line(twinfer("bot", "--target", "127.0.0.1:9", "--model", "tiny", "--duration", "1s", "--threshold", "p99<5"),
             "p99<5", "needs a unit")


def test_models_against_the_http_port_says_it_is_not_the_game_port(tmp_path, server_factory):
    build_matmul_relu(tmp_path / "repo" / "tiny" / "1" / "model.onnx", np.eye(16))
    server = server_factory(tmp_path / "repo", "--insecure-dev")
    one_line(twinfer("models", "--server", server.http), f"{server.http} answered in HTTP",
             "not the game protocol port")
    one_line(twinfer("models", "--server", server.grpc), f"{server.grpc} answered in HTTP/2 (gRPC)",
             "not the game protocol port")
    ok = twinfer("models", "--server", f"127.0.0.1:{server.tcp}")
    assert ok.returncode == 0 and ok.stdout.startswith("tiny"), ok.stdout + ok.stderr
    assert server.stop() == 0
