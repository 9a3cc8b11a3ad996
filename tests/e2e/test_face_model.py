"""The trained face model end to end: within its gate on held-out faces through a real server, an undertrained
version published by the real `twinfer train` is refused while the trained one keeps serving, and a synthetic face
streamed by `twinfer stream` reaches a VMC receiver as blendshapes that follow the driving values."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

from tests.e2e.conftest import SteadyTraffic, wait_until
from tests.e2e.vmc_receiver import VmcReceiver
from twinfer.client import Client
from twinfer.demo_models import build_repository
from twinfer.sources.face_dataset import DRIVEN_INDEX, face_dataset
from twinfer.sources.synthetic_face import DRIVEN
from twinfer.streaming.tracking_check import correlations, read_sent
from twinfer.training.publish import GATE_MAX_MAE, GATE_MAX_MAE_PER_VALUE

pytestmark = pytest.mark.e2e
ENV = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
HELD_OUT_SEED = 4242  # neither the training seed (0) nor the validation set's


def twinfer(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twinfer", *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV)


def _served(server, images: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(server.http)
    outputs = []
    for start in range(0, len(images), 16):
        batch = httpclient.InferInput("image", list(images[start : start + 16].shape), "FP32")
        batch.set_data_from_numpy(images[start : start + 16], binary_data=True)
        outputs.append(client.infer("face_blendshapes", [batch]).as_numpy("blendshapes"))
    client.close()
    return np.concatenate(outputs)


def test_served_face_model_is_within_its_gate_on_held_out_faces(tmp_path, server_factory):
    repo = tmp_path / "repo"
    build_repository(repo)
    server = server_factory(repo, "--insecure-dev")
    # The gate's own held-out set (never trained on), through the server as a client would send it.
    with np.load(repo / "face_blendshapes" / "validation.npz") as data:
        images, targets = data["image"], data["blendshapes"]
    per_value = np.abs(_served(server, images) - targets).mean(axis=0)
    worst = {DRIVEN[i]: round(float(per_value[j]), 4) for i, j in enumerate(DRIVEN_INDEX)}
    assert per_value.mean() < GATE_MAX_MAE and per_value.max() < GATE_MAX_MAE_PER_VALUE, worst
    # Faces from yet another seed: the error is not a property of one sample (looser: 160 faces are noisier).
    images, targets = face_dataset(160, 128, HELD_OUT_SEED)
    fresh = np.abs(_served(server, images) - targets).mean(axis=0)
    assert fresh.mean() < GATE_MAX_MAE and fresh.max() < 1.25 * GATE_MAX_MAE_PER_VALUE, fresh.max()
    validated = twinfer("validate", "face_blendshapes", "--model-repository", str(repo))
    assert validated.returncode == 0 and "passed" in validated.stdout, validated.stdout + validated.stderr
    assert server.stop() == 0


def test_an_undertrained_version_is_refused_while_the_trained_one_serves(tmp_path, server_factory):
    repo = tmp_path / "repo"
    build_repository(repo)
    probe = face_dataset(1, 128, HELD_OUT_SEED)[0]
    session = ort.InferenceSession(str(repo / "face_blendshapes" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    [expected] = session.run(None, {"image": probe})
    server = server_factory(repo, "--insecure-dev", "--repository-poll", "0.1")
    with SteadyTraffic(server.tcp, "face_blendshapes", {"image": probe},
                       lambda out: bool(np.allclose(out["blendshapes"], expected, atol=1e-5))) as traffic:
        served = traffic.served
        wait_until(lambda: len(served) > 50, what="traffic on version 1")
        trained = twinfer("train", "face-blendshapes", "--repository", str(repo), "--samples", "64", "--epochs", "1",
                          "--max-steps", "1", "--threads", "1", "--formats", "onnx", "--publish-anyway")
        assert trained.returncode == 0, trained.stdout + trained.stderr
        assert "WARNING: misses its validation gate, published anyway" in trained.stdout
        assert (repo / "face_blendshapes" / "2" / "model.onnx").is_file()
        with Client("127.0.0.1", server.tcp) as client:
            status = wait_until(
                lambda: next((m for m in client.models() if m.name == "face_blendshapes" and
                              "validation gate" in m.reason), None), timeout=60, what="version 2 refused")
        assert list(status.versions) == ["1"] and status.state == "READY"
        assert "blendshapes MAE" in status.reason
        count = len(served)
        wait_until(lambda: len(served) > count + 50, what="traffic goes on while version 2 is refused")
    assert traffic.errors == [] and served and all(served)
    assert server.stop() == 0


def test_streamed_synthetic_face_drives_vmc_blendshapes_that_follow_it(tmp_path, server_factory):
    repo = tmp_path / "repo"
    build_repository(repo)
    server = server_factory(repo, "--insecure-dev")
    receiver = VmcReceiver()
    sent_file = tmp_path / "sent.jsonl"
    cli_receiver = subprocess.Popen(
        [sys.executable, "-m", "twinfer", "receive", "--vmc", "0", "--seconds", "9", "--compare", str(sent_file)],
        stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        first = cli_receiver.stdout.readline()
        assert first.startswith("listening"), first
        cli_port = first.split(":")[1].split(" ")[0]
        stream = twinfer("stream", "--server", f"127.0.0.1:{server.tcp}", "--source", "synthetic", "--fps", "20",
                         "--seconds", "8", "--vmc", f"127.0.0.1:{receiver.port}", "--vmc", f"127.0.0.1:{cli_port}",
                         "--record", str(sent_file))
        assert stream.returncode == 0, stream.stdout + stream.stderr
        report, _ = cli_receiver.communicate(timeout=30)
    finally:
        if cli_receiver.poll() is None:
            cli_receiver.kill()
        receiver.close()
    sent = read_sent(sent_file)
    frames = receiver.timed_frames()
    assert len(sent) >= 150 and len(frames) >= 0.9 * len(sent)
    result = correlations(sent, frames)
    assert set(result) == set(DRIVEN)
    low = {name: round(r, 3) for name, (r, _) in result.items() if not r > 0.8}
    assert not low, f"shapes that do not follow the face: {low}"
    for name in DRIVEN:  # the CLI receiver got the same stream and printed the same comparison
        assert name in report
    assert server.stop() == 0
