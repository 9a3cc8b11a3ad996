"""Convert the pinned wheel's face models to ONNX, reproducibly (twinfer.faces.model_convert: the ONNX route).

Needs tf2onnx and TensorFlow (`pip install -e ".[face-build]"`); serving the result needs neither.

    python tools/convert_face_models.py [--out build/face_models_onnx] [--check]
"""

from __future__ import annotations

import sys

from twinfer.faces.model_convert import main

if __name__ == "__main__":
    sys.exit(main())
