"""Fetch the pinned mediapipe wheel and extract the three face models and the licence (twinfer.faces.model_files).

    python tools/fetch_face_models.py [--cache build/mediapipe-wheel] [--out build/face_models] [--offline]
"""

from __future__ import annotations

import sys

from twinfer.faces.model_files import main

if __name__ == "__main__":
    sys.exit(main())
