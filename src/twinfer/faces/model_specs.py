"""The three face models as repository models: names, tensors, value ranges and their config.yaml.

One place for the tensor contract, so the demo repository's configs and the tracking steps that fill and read
the tensors cannot drift apart. All three take NHWC float32 RGB crops (batch first) and are served by the
`tflite` backend from the MediaPipe 0.10.21 files (Apache-2.0; LICENSE.mediapipe sits beside each version).

- face_detector: input [128,128,3], the frame letterboxed to a square, in [-1, 1] -> regressors [896,16],
  classificators [896,1] (score logits);
- face_landmarks: input_1 [192,192,3], the face ROI crop, in [0, 1] -> conv2d_21 [1,1,1404] (468 x, y, z in
  crop pixels), conv2d_31 [1,1,1] (face-presence logit);
- iris_landmarks: input_1 [64,64,3], one eye ROI crop (the image-right eye mirrored), in [0, 1] ->
  output_eyes_contours_and_brows [213] (71 x, y, z), output_iris [15] (5 x, y, z; the centre first).

Ranges are MediaPipe's (face_detection.pbtxt: ImageToTensor -1..1; iris_landmark_cpu.pbtxt: TfLiteConverter
with zero_center false, 0..1; the 0.10 face_landmark graph: 0..1). Measured on skimage's astronaut, the landmark
and iris models barely care (presence logit 26.56 at 0..1 vs 26.78 at -1..1, iris centres within 0.2 px), so
a range mistake there would not show in tests: keep to MediaPipe's. Which eye is mirrored was measured: with the
image-right eye (corners 362, 263) mirrored, the iris model's 16 eyelid points sit 0.7 px from the face mesh's
eyelid landmarks; mirroring the other eye instead puts them 11.5 px off.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class FaceModelSpec:
    """A face model as served: repository name, the wheel's file, tensors (dims without batch), input range."""

    name: str
    tflite: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    value_range: tuple[float, float]
    max_batch_size: int
    note: str

    @property
    def input(self) -> Tensor:
        return self.inputs[0]

    def config_yaml(self) -> str:
        """config.yaml: the tflite backend, batching across streams, tensors; a header with the value range."""
        config = {
            "backend": "tflite",
            "max_batch_size": self.max_batch_size,
            "dynamic_batching": {"max_queue_delay_us": 500, "preferred_batch_sizes": [4, 8]},
            "inputs": [{"name": t.name, "datatype": "FP32", "dims": list(t.dims)} for t in self.inputs],
            "outputs": [{"name": t.name, "datatype": "FP32", "dims": list(t.dims)} for t in self.outputs],
        }
        low, high = self.value_range
        header = (f"# Built by `make models` (twinfer.demo_models) from MediaPipe 0.10.21's {self.tflite}\n"
                  f"# (Apache-2.0, see 1/LICENSE.mediapipe). Input: NHWC float32 RGB in [{low:g}, {high:g}].\n"
                  f"# {self.note}\n")
        return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=110)


FACE_DETECTOR = FaceModelSpec(
    "face_detector", "face_detection_short_range.tflite",
    (Tensor("input", (128, 128, 3)),),
    (Tensor("regressors", (896, 16)), Tensor("classificators", (896, 1))),
    (-1.0, 1.0), 16,
    "BlazeFace short range: per SSD anchor a box and 6 keypoints (in 128-pixel units) and a score logit "
    "(twinfer.faces.detection decodes them).",
)
FACE_LANDMARKS = FaceModelSpec(
    "face_landmarks", "face_landmark.tflite",
    (Tensor("input_1", (192, 192, 3)),),
    (Tensor("conv2d_21", (1, 1, 1404)), Tensor("conv2d_31", (1, 1, 1))),
    (0.0, 1.0), 32,
    "468 landmarks x, y, z in crop pixels (z scaled like x) and a face-presence logit (twinfer.faces.crops).",
)
IRIS_LANDMARKS = FaceModelSpec(
    "iris_landmarks", "iris_landmark.tflite",
    (Tensor("input_1", (64, 64, 3)),),
    (Tensor("output_eyes_contours_and_brows", (213,)), Tensor("output_iris", (15,))),
    (0.0, 1.0), 64,
    "71 eye contour and brow points and 5 iris points (x, y, z in crop pixels); trained on one eye side, so the "
    "other eye's crop is mirrored (twinfer.faces.crops).",
)
FACE_MODELS: tuple[FaceModelSpec, ...] = (FACE_DETECTOR, FACE_LANDMARKS, IRIS_LANDMARKS)
