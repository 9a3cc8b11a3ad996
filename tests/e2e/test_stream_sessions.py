"""A capture client's session lives while its stream does: it sends frames and heartbeats over UDP and may say
nothing on TCP for minutes (found by the soak: such sessions were closed after idle_timeout_s, taking the stream)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.e2e.conftest import wait_until
from tests.support import make_repository
from twinfer.client import Client, SessionClosed
from twinfer.client.streams import StreamSender, target
from twinfer.demo_models import copy_shipped_face_model


def test_stream_heartbeats_keep_a_silent_tcp_session_open_and_silence_ends_it(tmp_path, server_factory):
    repo = make_repository(tmp_path / "repo")
    (repo / "face" / "1").mkdir(parents=True)
    copy_shipped_face_model(repo / "face" / "1" / "model.onnx")
    server = server_factory(repo, "--insecure-dev", env={"TWINFER_IDLE_TIMEOUT_S": "1.5",
                                                         "TWINFER_STREAM_HEARTBEAT_TIMEOUT_S": "1.0"})
    client = Client("127.0.0.1", server.tcp)
    sender = StreamSender(client, "face", 32, 32, "GRAY8", [target("native", "127.0.0.1:9")])
    deadline = time.monotonic() + 4.0  # more than twice the idle timeout, with no TCP traffic at all
    while time.monotonic() < deadline:
        sender.heartbeat()
        time.sleep(0.2)
    assert client.infer("face", {"image": np.zeros((1, 1, 128, 128), np.float32)})  # the session is still there
    # Silence on both: the stream is reaped, then the session goes for being idle.
    wait_until(lambda: client.closed, timeout=10, what="the idle session to be closed")
    with pytest.raises(SessionClosed, match="nothing received"):
        client.ping()
    assert server.stop() == 0
