"""The face-to-blendshape CNN, in PyTorch: the one architecture every export (ONNX, TorchScript, Keras) mirrors.

Input: (N, 1, S, S) grayscale in [0, 1] (S = IMAGE_SIZE). Output: (N, 52) in [0, 1], ARKit order.
Five stride-2 convolutions (each followed by batch normalisation and ReLU) take 128x128 down to 4x4x64; the flatten
keeps NCHW order and two dense layers map it to the 52 values. Batch normalisation is what makes it train in
minutes (without it the same run stalls at the mean for most shapes); for inference it is folded into the
convolutions (`folded_state`), so every export is plain conv/dense layers. No global pooling: left and right shapes (eyeBlinkLeft vs Right) differ only by *where* the
feature is, and a flatten keeps that, an average would not.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

IMAGE_SIZE = 128
OUTPUTS = 52
# (name, in_channels, out_channels, kernel, stride, padding): symmetric padding, so the Keras mirror pads
# explicitly (ZeroPadding2D) instead of relying on "same", which pads stride-2 convolutions asymmetrically.
CONV_LAYERS = (
    ("conv1", 1, 16, 5, 2, 2),
    ("conv2", 16, 32, 3, 2, 1),
    ("conv3", 32, 64, 3, 2, 1),
    ("conv4", 64, 64, 3, 2, 1),
    ("conv5", 64, 64, 3, 2, 1),
)
HIDDEN = 128
FEATURE_SIZE = IMAGE_SIZE // 32  # spatial size after the five stride-2 convolutions


class FaceNet(nn.Module):
    """conv1..conv5 (+BatchNorm +ReLU) -> flatten (C, H, W order) -> fc1 (+ReLU) -> fc2 -> sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        for name, cin, cout, k, s, p in CONV_LAYERS:
            self.add_module(name, nn.Conv2d(cin, cout, k, stride=s, padding=p))
            self.add_module(_bn(name), nn.BatchNorm2d(cout))
        self.fc1 = nn.Linear(CONV_LAYERS[-1][2] * FEATURE_SIZE * FEATURE_SIZE, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, OUTPUTS)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image
        for name, *_ in CONV_LAYERS:
            x = torch.relu(getattr(self, _bn(name))(getattr(self, name)(x)))
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return torch.sigmoid(self.fc2(x))


def _bn(conv_name: str) -> str:
    return "bn" + conv_name.removeprefix("conv")


def folded_state(model: FaceNet) -> dict[str, np.ndarray]:
    """The eval-mode network as plain layers: conv{i}.weight/.bias with its batch norm folded in, fc1/fc2 as they
    are. What the Keras mirror (and anything else that wants no BatchNorm) is built from."""
    state: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for name, *_ in CONV_LAYERS:
            conv, bn = getattr(model, name), getattr(model, _bn(name))
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            state[f"{name}.weight"] = (conv.weight * scale[:, None, None, None]).numpy().copy()
            state[f"{name}.bias"] = ((conv.bias - bn.running_mean) * scale + bn.bias).numpy().copy()
        for name in ("fc1", "fc2"):
            layer = getattr(model, name)
            state[f"{name}.weight"] = layer.weight.numpy().copy()
            state[f"{name}.bias"] = layer.bias.numpy().copy()
    return state
