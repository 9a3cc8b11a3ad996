"""#18 item 2: the README's commands are true to the letter. Its marked shell and Python examples
(`<!-- readme-test -->`, see tests/e2e/readme_runner.py) run unchanged against a live server on the default
ports, from a directory laid out like a clone after `make run`; each must succeed, and the sample outputs the
README prints must be what the commands print.

The default ports (9000, 8000, ...) are taken inside a private network namespace (`unshare -rn`: a loopback of
its own, so a developer's own server or another test run on this machine is neither hit nor in the way); where
unshare is refused, the test runs on the real loopback if those ports are free, and skips otherwise."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.readme_runner import marked_blocks

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEFAULT_PORTS = (9000, 8000, 8001, 8002, 39539, 20100)


def private_loopback() -> list[str] | None:
    """The command prefix that runs in a network namespace with its loopback up; None where that is refused."""
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up 2>/dev/null || true; "
                            f"{sys.executable} -c 'import socket; socket.create_server((\"127.0.0.1\", 9000))'"],
                           capture_output=True, timeout=30)
    return ["unshare", "-rn", "sh", "-c", 'ip link set lo up 2>/dev/null || true; exec "$@"', "sh"] \
        if probe.returncode == 0 else None


def ports_free() -> bool:
    for port in DEFAULT_PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> list[dict]:
    prefix = private_loopback()
    if prefix is None and not ports_free():
        pytest.skip("no network namespace here (unshare -rn refused) and the README's default ports are taken")
    workdir = tmp_path_factory.mktemp("clone")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TWINFER_")}, "ORT_DISABLE_TELEMETRY": "1"}
    # `make models`, from the checkout (its build/ caches the face models' pinned wheel), into the fresh directory
    built = subprocess.run([sys.executable, "-m", "twinfer.demo_models", str(workdir / "models")], cwd=ROOT,
                           capture_output=True, text=True, timeout=300, env=env)
    assert built.returncode == 0, built.stderr
    (workdir / ".venv").symlink_to(sys.prefix)
    (workdir / "examples").symlink_to(ROOT / "examples")
    results = workdir / "results.json"
    command = [*(prefix or []), sys.executable, "-m", "tests.e2e.readme_runner", str(README), str(workdir),
               str(results)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**env, "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])})
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(results.read_text())


def test_the_readme_marks_the_examples_a_new_user_runs_first():
    blocks = marked_blocks(README.read_text())
    text = "\n".join(b.text for b in blocks)
    assert sum("serve" in b.options for b in blocks) == 1
    for expected in ("twinfer models", "twinfer infer face_blendshapes", "from twinfer.client import Client",
                     "twinfer stream --source synthetic", "curl -s localhost:8000", "tritonclient.http",
                     "twinfer token", "twinfer config-server", "twinfer bot examples/scenario.yaml"):
        assert expected in text, expected


def test_every_marked_readme_command_succeeds(readme_run):
    failed = [r for r in readme_run if r["rc"] != 0]
    assert not failed, "\n\n".join(f"README line {r['line']}: {r['command']}\nrc {r['rc']}\n{r.get('stdout', '')}"
                                   f"\n{r.get('stderr', '')}" for r in failed)


def test_the_readme_s_twinfer_models_sample_is_what_it_prints(readme_run):
    block = next(b for b in marked_blocks(README.read_text()) if "twinfer models\n" in b.text)
    sample = re.findall(r"^# (\S+\s+\S+\s+versions=\S+)$", block.text.split("twinfer models\n", 1)[1], re.M)
    [run] = [r for r in readme_run if r["command"] == ".venv/bin/twinfer models"]
    assert [" ".join(line.split()) for line in run["stdout"].splitlines()] == [" ".join(s.split()) for s in sample]


def test_the_readme_s_infer_of_the_face_model_gets_52_labelled_values(readme_run):
    [run] = [r for r in readme_run if r["command"].startswith(".venv/bin/twinfer infer face_blendshapes")]
    out = json.loads(run["stdout"])["outputs"]["blendshapes"]
    assert out["shape"] == [1, 52] and len(out["labels"]) == 52
