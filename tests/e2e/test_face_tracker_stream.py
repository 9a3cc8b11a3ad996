"""A real server's `face_tracker` stream (FaceTrackerProcessor: each frame inline on a frame thread, or with
`batch_across_streams` its three model calls through the facade's batchers) against MediaPipe's own face mesh on the parity sequence (tests/face_frames.py): the
face is tracked on exactly MediaPipe's frames, the landmarks sent back agree within 1 % of the face width, and the
detector runs only when no face is tracked (the first frame and the frame after each black cut)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.face_frames import landmark_errors, reference_frames
from twinfer.client import Client
from twinfer.client.streams import StreamSender, target
from twinfer.demo_models import build_repository
from twinfer.protocol import game_pb2

pytest.importorskip("ai_edge_litert", reason="the tflite extra serves the face models")
pytest.importorskip("skimage.data", reason="scikit-image ships the astronaut")
pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "faces" / "mediapipe_reference.npz"


@pytest.mark.parametrize("batch_across_streams", [False, True], ids=["inline", "through-the-facade"])
def test_a_face_tracker_stream_matches_mediapipe_and_detects_only_after_losing_the_face(tmp_path, server_factory,
                                                                                      batch_across_streams):
    repo = tmp_path / "repo"
    build_repository(repo)
    settings = repo / "face_tracker" / "1" / "tracker.yaml"
    settings.write_text(settings.read_text() + f"batch_across_streams: {str(batch_across_streams).lower()}\n")
    server = server_factory(repo, "--insecure-dev")
    reference = np.load(FIXTURE)
    names, frames = reference_frames()
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(20)
    results: list[game_pb2.StreamResult] = []
    with Client("127.0.0.1", server.tcp) as client:
        sender = StreamSender(client, "face_tracker", 512, 512, pixel_format="RGB8", want_landmarks=True,
                              targets=[target("native", f"127.0.0.1:{receiver.getsockname()[1]}")])
        for frame in frames:  # one frame in flight: the stream's latest-frame-wins rule never skips one
            sequence = sender.send_frame(frame)
            while (result := game_pb2.StreamResult.FromString(receiver.recv(65535))).sequence != sequence:
                pass
            results.append(result)
        sender.close()
    receiver.close()

    tracked = np.array([r.face.tracked for r in results])
    np.testing.assert_array_equal(tracked, ~np.isnan(reference["landmarks"][:, 0, 0]))
    ours = [np.asarray(r.face.landmarks, np.float64).reshape(-1, 3) if r.face.tracked else None for r in results]
    errors = landmark_errors(names, reference["landmarks"], ours)
    overall = float(np.mean([e for values in errors.values() for e in values]))
    assert overall <= 0.01, {name: round(100 * float(np.mean(e)), 2) for name, e in errors.items()}

    http = httpclient.InferenceServerClient(server.http)
    stats = {name: http.get_inference_statistics(model_name=name)["model_stats"][0]
             for name in ("face_detector", "face_landmarks", "iris_landmarks")}
    http.close()
    counts = {name: int(s["inference_count"]) for name, s in stats.items()}
    queued = int(stats["face_landmarks"]["inference_stats"]["queue"]["count"])
    assert (queued > 0) == batch_across_streams  # only the facade's batcher queues; an inline run has no queue
    cuts = names.count("cut")
    assert counts["face_detector"] == 1 + cuts, counts
    assert counts["face_landmarks"] == len(frames), counts  # every frame: tracked ROI, or the detector's face
    assert counts["iris_landmarks"] == 2 * int(tracked.sum()), counts
    assert server.stop() == 0
