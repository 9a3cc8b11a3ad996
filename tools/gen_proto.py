"""Regenerate src/twinfer/protocol/game_pb2.py(i) from proto/twinfer/v1/game.proto.

The generated modules are committed, so installing twinfer needs no protoc; `make proto` runs this script and
`tests/unit/test_proto_generated.py` fails when the committed files drift from the .proto.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "twinfer/v1/game.proto"
TARGET = ROOT / "src" / "twinfer" / "protocol"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc into out_dir and return the generated files.

    In a child process: grpc_tools' protoc shares protobuf/abseil symbols with whatever the caller has loaded,
    and in a process that has imported TensorFlow (the test suite) it crashes with a segfault.
    """
    args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", PROTO]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed on {PROTO}: {result.stderr.strip()}")
    gen = out_dir / "twinfer" / "v1"
    return [gen / "game_pb2.py", gen / "game_pb2.pyi"]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copyfile(path, TARGET / path.name)
            print(f"wrote {TARGET / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
