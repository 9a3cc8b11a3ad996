"""The Keras mirror of FaceNet, built from its folded weights, for the `tensorflow` backend (SavedModel, .keras).

Same input (`image`, N x 1 x 128 x 128, channels first like the ONNX and TorchScript versions) and output
(`blendshapes`, N x 52). Keras convolutions on the CPU want channels last, so the image is transposed on the way
in and the features back before the flatten, which keeps PyTorch's (C, H, W) flatten order for fc1. PyTorch pads
symmetrically; Keras "same" pads stride-2 convolutions asymmetrically, so each convolution pads explicitly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import tensorflow as tf

from twinfer.training.face_net import CONV_LAYERS, IMAGE_SIZE, OUTPUTS


def build_keras_face_net(state: dict[str, np.ndarray]) -> keras.Model:
    """A Keras model computing exactly what the PyTorch FaceNet does (from `folded_state`)."""
    image = keras.Input((1, IMAGE_SIZE, IMAGE_SIZE), name="image")
    x = keras.layers.Permute((2, 3, 1))(image)  # NCHW -> NHWC
    for name, _cin, cout, kernel, stride, padding in CONV_LAYERS:
        x = keras.layers.ZeroPadding2D(padding)(x)
        conv = keras.layers.Conv2D(cout, kernel, strides=stride, padding="valid", activation="relu", name=name)
        x = conv(x)
        conv.set_weights([state[f"{name}.weight"].transpose(2, 3, 1, 0), state[f"{name}.bias"]])  # OIHW -> HWIO
    x = keras.layers.Permute((3, 1, 2))(x)  # NHWC -> NCHW, so the flatten order is PyTorch's
    x = keras.layers.Flatten()(x)
    fc1 = keras.layers.Dense(state["fc1.weight"].shape[0], activation="relu", name="fc1")
    x = fc1(x)
    fc1.set_weights([state["fc1.weight"].T, state["fc1.bias"]])
    fc2 = keras.layers.Dense(OUTPUTS, activation="sigmoid", name="fc2")
    out = fc2(x)
    fc2.set_weights([state["fc2.weight"].T, state["fc2.bias"]])
    out = keras.layers.Identity(name="blendshapes")(out)
    return keras.Model(image, out, name="face_blendshapes")


class _Serving(tf.Module):
    def __init__(self, model: keras.Model) -> None:
        super().__init__()
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, 1, IMAGE_SIZE, IMAGE_SIZE], tf.float32, name="image")])
    def serve(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"blendshapes": self.model(image, training=False)}


def save_tensorflow(state: dict[str, np.ndarray], directory: Path, fmt: str = "savedmodel") -> Path:
    """Write model.savedmodel/ (serving_default: image -> blendshapes) or model.keras into `directory`, via a
    temporary name renamed into place."""
    model = build_keras_face_net(state)
    target = directory / ("model.savedmodel" if fmt == "savedmodel" else "model.keras")
    tmp = Path(tempfile.mkdtemp(prefix=".tf-export-", dir=directory))
    try:
        if fmt == "savedmodel":
            module = _Serving(model)
            tf.saved_model.save(module, str(tmp / "out"), signatures={"serving_default": module.serve})
        else:
            model.save(str(tmp / "out.keras"))
            (tmp / "out.keras").rename(tmp / "out")
        os.replace(tmp / "out", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
