"""The three MediaPipe face models served by a real server from the demo repository: several streams tracking a
real face through KServe HTTP get the same points as in-process, and their calls batch together."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tritonclient.http as httpclient

from twinfer.demo_models import build_repository
from twinfer.faces.tracking_step import FaceTrackingStep, ModelCall

pytest.importorskip("ai_edge_litert", reason="the tflite extra serves the face models")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the test faces")
pytestmark = pytest.mark.e2e

STREAMS = 6
FRAMES = 5


def _http_infer(client: httpclient.InferenceServerClient):
    def infer(call: ModelCall) -> dict[str, np.ndarray]:
        inputs = []
        for name, value in call.inputs.items():
            tensor = httpclient.InferInput(name, list(value.shape), "FP32")
            tensor.set_data_from_numpy(value, binary_data=True)
            inputs.append(tensor)
        result = client.infer(call.model, inputs)
        return {out["name"]: result.as_numpy(out["name"]) for out in result.get_response()["outputs"]}

    return infer


def test_streams_track_a_face_through_the_server_and_their_calls_batch(tmp_path, server_factory):
    repo = tmp_path / "repo"
    build_repository(repo)
    server = server_factory(repo, "--insecure-dev")
    frame = skimage_data.astronaut()
    tracked: dict[int, list] = {}
    errors: list[BaseException] = []

    def stream(k: int) -> None:
        client = httpclient.InferenceServerClient(server.http)
        try:
            step = FaceTrackingStep()
            tracked[k] = [step.track(frame, _http_infer(client)) for _ in range(FRAMES)]
        except BaseException as exc:  # reported below, with the server log
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(STREAMS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, f"{errors[0]!r}\n{server.log()[-3000:]}"

    reference = tracked[0][0]
    assert reference is not None and reference.detected and reference.presence > 0.9
    for faces in tracked.values():
        assert faces[0].detected and not any(face.detected for face in faces[1:])  # the detector ran once
        np.testing.assert_allclose(faces[0].landmarks, reference.landmarks, atol=1e-3)
        np.testing.assert_allclose(faces[-1].image_right_eye.iris, tracked[0][-1].image_right_eye.iris, atol=1e-3)

    client = httpclient.InferenceServerClient(server.http)
    stats = {name: client.get_inference_statistics(model_name=name)["model_stats"][0]
             for name in ("face_detector", "face_landmarks", "iris_landmarks")}
    client.close()
    landmarks = stats["face_landmarks"]
    assert int(landmarks["inference_count"]) == STREAMS * FRAMES
    assert int(stats["face_detector"]["inference_count"]) == STREAMS
    assert int(stats["iris_landmarks"]["inference_count"]) == 2 * STREAMS * FRAMES  # two eye crops per call
    assert int(landmarks["execution_count"]) < int(landmarks["inference_count"]), landmarks  # streams batched
    assert server.stop() == 0
