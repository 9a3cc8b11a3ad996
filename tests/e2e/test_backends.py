"""The PyTorch and TensorFlow backends behind a real server: the same face network exported to ONNX, TorchScript,
torch.export and a SavedModel answers the same over the game protocol and KServe, and requests to each are
batched together by the same dynamic batcher."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml

from tests.support import FACE_TENSORS, face_net_with_batch_norm_statistics
from twinfer.client import Client
from twinfer.training.export import export_onnx, export_program, export_torchscript
from twinfer.training.face_net import folded_state
from twinfer.training.keras_export import save_tensorflow

pytestmark = pytest.mark.e2e
MODELS = ("face_onnx", "face_torchscript", "face_export", "face_savedmodel")


def test_every_backend_serves_the_same_answers_with_batching(tmp_path, server_factory):
    model = face_net_with_batch_norm_statistics(11)
    repo = tmp_path / "repo"
    batching = {"max_batch_size": 16, "dynamic_batching": {"max_queue_delay_us": 20000,
                                                           "preferred_batch_sizes": [8]}}
    for name, filename, export in (("face_onnx", "model.onnx", export_onnx),
                                   ("face_torchscript", "model.pt", export_torchscript),
                                   ("face_export", "model.pt2", export_program)):
        (repo / name / "1").mkdir(parents=True)
        export(model, repo / name / "1" / filename)
        extra = FACE_TENSORS if name != "face_onnx" else {}
        (repo / name / "config.yaml").write_text(yaml.safe_dump({**batching, **extra}))
    (repo / "face_savedmodel" / "1").mkdir(parents=True)
    save_tensorflow(folded_state(model), repo / "face_savedmodel" / "1")
    (repo / "face_savedmodel" / "config.yaml").write_text(yaml.safe_dump(batching))  # tensors from the signature
    server = server_factory(repo, "--insecure-dev")

    images = np.random.default_rng(12).random((16, 1, 1, 128, 128), dtype=np.float32)
    answers: dict[str, np.ndarray] = {}
    with Client("127.0.0.1", server.tcp) as client:
        assert {m.name: m.state for m in client.models()} == {name: "READY" for name in MODELS}
        for name in MODELS:  # 16 pipelined single-image requests each: the batcher groups them
            futures = [client.infer_async(name, {"image": image}) for image in images]
            answers[name] = np.concatenate([f.result(60)["blendshapes"] for f in futures])
    for name in MODELS:
        np.testing.assert_allclose(answers[name], answers["face_onnx"], atol=1e-5, err_msg=name)

    http = httpclient.InferenceServerClient(server.http)
    for name in MODELS:
        batch = httpclient.InferInput("image", [4, 1, 128, 128], "FP32")
        batch.set_data_from_numpy(images[:4, 0], binary_data=True)
        np.testing.assert_allclose(http.infer(name, [batch]).as_numpy("blendshapes"), answers["face_onnx"][:4],
                                   atol=1e-5, err_msg=name)
        stats = http.get_inference_statistics(name)["model_stats"][0]
        assert stats["inference_stats"]["success"]["count"] == 17 and stats["inference_stats"]["fail"]["count"] == 0
        assert stats["execution_count"] < 17, f"{name}: nothing was batched ({stats['execution_count']} runs)"
    assert http.get_model_config("face_savedmodel")["platform"] == "tensorflow_savedmodel"
    assert http.get_model_metadata("face_torchscript")["platform"] == "pytorch_libtorch"
    http.close()
    assert server.stop() == 0
