"""twinfer: a real-time AI inference server on Twisted."""

from __future__ import annotations

import os

# ONNX Runtime reads this at import; set it before anything imports onnxruntime.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
