"""Shared test helpers: synchronous thread runners and a tiny model repository."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from twisted.internet.defer import Deferred, maybeDeferred

TINY_W = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)


def tiny_reference(x: np.ndarray) -> np.ndarray:
    """What the demo `tiny` model computes: relu(x @ W)."""
    return np.maximum(x @ TINY_W, 0)


class SyncPool:
    """Runs work inline, or holds it until `release` when `hold` is set (to keep requests in flight)."""

    def __init__(self) -> None:
        self.hold = False
        self.held: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred]] = []
        self.stopped = False

    def run(self, fn: Callable[..., Any], *args: Any) -> Deferred:
        if self.hold:
            d: Deferred = Deferred()
            self.held.append((fn, args, d))
            return d
        return maybeDeferred(fn, *args)

    def release(self) -> None:
        held, self.held = self.held, []
        for fn, args, d in held:
            maybeDeferred(fn, *args).chainDeferred(d)

    def stop(self, wait: bool = True) -> None:
        self.stopped = True


class SyncThreads:
    """A ThreadRunner without threads: every Deferred fires before the call returns."""

    def __init__(self) -> None:
        self.pools: dict[str, SyncPool] = {}

    def run_io(self, fn: Callable[..., Any], *args: Any) -> Deferred:
        return maybeDeferred(fn, *args)

    def instance_pool(self, name: str, size: int) -> SyncPool:
        pool = self.pools[name] = SyncPool()
        return pool


def make_repository(root: Path) -> Path:
    """A repository with only `tiny/1/model.onnx`, as someone else would lay it out (no config file)."""
    from twinfer.demo_models import build_tiny

    (root / "tiny" / "1").mkdir(parents=True, exist_ok=True)
    build_tiny(root / "tiny" / "1" / "model.onnx")
    return root


def build_matmul_relu(path: Path, weights: np.ndarray) -> None:
    """A `tiny`-shaped model with chosen weights, so two versions give tellable-apart outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["INPUT0", "W"], ["mm"]), helper.make_node("Relu", ["mm"], ["OUTPUT0"])],
        "tiny",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 16])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), name="W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def take_messages(transport: Any, message_cls: type) -> list:
    """Every frame written to a StringTransport so far, parsed as `message_cls`; the transport is cleared."""
    from twinfer.protocol.framing import FrameDecoder

    out = [message_cls.FromString(body) for _, body in FrameDecoder().feed(transport.value())]
    transport.clear()
    return out


def build_slow_model(model_dir: Path, width: int = 512, layers: int = 12) -> None:
    """A model that takes milliseconds per request and runs requests one at a time (no batching)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    nodes, inits, current = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, name=f"w{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"h{i}"]))
        current = f"h{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", width])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(model_dir / "1" / "model.onnx"))
    (model_dir / "config.yaml").write_text("dynamic_batching: false\n")


# The face network's tensors, for configs of formats whose signature cannot be read from the file.
FACE_TENSORS = {"inputs": [{"name": "image", "datatype": "FP32", "dims": [1, 128, 128]}],
                "outputs": [{"name": "blendshapes", "datatype": "FP32", "dims": [52]}]}


def face_net_with_batch_norm_statistics(seed: int, scale: float = 2.0) -> Any:
    """A seeded FaceNet in eval mode whose batch norms saw one random batch, so their running statistics are not
    the identity and export parity and folding checks really cover them."""
    import torch

    from twinfer.training.face_net import FaceNet

    torch.manual_seed(seed)
    model = FaceNet()
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 1, 128, 128) * scale)
    model.eval()
    return model


def parse_live_link_with_struct(packet: bytes) -> tuple:
    """An independent parse of DESIGN §8's layout: version, device, subject, frame time, count, 61 floats."""
    import struct

    (version,) = struct.unpack_from(">B", packet, 0)
    (n,) = struct.unpack_from(">i", packet, 1)
    device = packet[5 : 5 + n].decode()
    offset = 5 + n
    (n,) = struct.unpack_from(">i", packet, offset)
    subject = packet[offset + 4 : offset + 4 + n].decode()
    offset += 4 + n
    frame, sub_frame, numerator, denominator, count = struct.unpack_from(">ifiiB", packet, offset)
    values = struct.unpack_from(f">{count}f", packet, offset + 17)
    assert len(packet) == offset + 17 + 4 * count
    return version, device, subject, frame, sub_frame, numerator, denominator, count, values
