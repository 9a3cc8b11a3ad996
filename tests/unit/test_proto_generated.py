"""The committed game_pb2 modules must be what `make proto` would generate from the .proto."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_generated_code_matches_the_proto(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_proto
    finally:
        sys.path.pop(0)
    for generated in gen_proto.generate(tmp_path):
        committed = ROOT / "src" / "twinfer" / "protocol" / generated.name
        assert committed.read_text() == generated.read_text(), f"{committed.name} is stale: run `make proto`"
