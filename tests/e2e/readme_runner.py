"""Runs the README's marked examples, as written, from a fresh directory that looks like a clone after `make run`.

    python -m tests.e2e.readme_runner README.md WORKDIR RESULTS.json

A fenced block right after `<!-- readme-test[: options] -->` is run; options, space-separated:
- `serve`: the block's one command is the server every later block talks to (started, waited for until
  /v2/health/ready answers on 127.0.0.1:8000, stopped with SIGTERM at the end; it must exit 0);
- `alone`: run before that server starts (a block that starts servers of its own on the default ports);
- `background=0,2`: those commands (0-based) run in the background: each must print a first line and still be
  running when the block's other commands have finished; then it is stopped.
Every other command must exit 0. Commands are the block's lines with `\\` continuations joined; comment lines are
expected output, not commands. Bash blocks run in bash, Python blocks in `.venv/bin/python`. WORKDIR holds
`models` (the demo repository), `.venv` (the venv running this) and `examples`, so the README's relative paths
work unchanged. The ports are the defaults the README uses, so the test runs this inside a private network
namespace (tests/e2e/test_readme.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

MARKER = re.compile(r"^<!-- readme-test(?::\s*(?P<options>[^>]*?))?\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")
TIMEOUT_S = 120.0


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def commands(self) -> list[str]:
        if self.lang == "python":
            return [self.text]
        commands, current = [], ""
        for raw in self.text.splitlines():
            if not current and (not raw.strip() or raw.lstrip().startswith("#")):
                continue
            current += raw.rstrip()[:-1] + " " if raw.rstrip().endswith("\\") else raw
            if not raw.rstrip().endswith("\\"):
                commands.append(current.strip())
                current = ""
        return commands

    @property
    def background(self) -> set[int]:
        value = self.options.get("background", "")
        return {int(i) for i in value.split(",") if i.strip()}


def marked_blocks(readme: str) -> list[Block]:
    lines = readme.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if not match:
            continue
        fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if fence is None:
            raise ValueError(f"README line {i + 1}: a readme-test marker must be followed by a fenced block")
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        options = {}
        for word in (match["options"] or "").split():
            key, _, value = word.partition("=")
            options[key] = value
        blocks.append(Block(i + 2, fence["lang"] or "bash", "\n".join(lines[i + 2:end]) + "\n", options))
    return blocks


def popen(block: Block, command: str, workdir: Path, **kwargs) -> subprocess.Popen:
    args = [".venv/bin/python", "-c", command] if block.lang == "python" else ["bash", "-c", command]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # a background command's first line must not wait in a buffer
    return subprocess.Popen(args, cwd=workdir, text=True, start_new_session=True, env=env, **kwargs)


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(10)


def run_block(block: Block, workdir: Path) -> list[dict]:
    results, background = [], []
    for index, command in enumerate(block.commands):
        entry = {"line": block.line, "command": command}
        if index in block.background:
            process = popen(block, command, workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            entry["first_line"] = process.stdout.readline()  # blocks until the command says something
            background.append((entry, process))
        else:
            run = subprocess.run(
                [".venv/bin/python", "-c", command] if block.lang == "python" else ["bash", "-c", command],
                cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT_S)
            entry.update(rc=run.returncode, stdout=run.stdout[-4000:], stderr=run.stderr[-4000:])
        results.append(entry)
    for entry, process in background:
        entry["still_running"] = process.poll() is None
        entry["rc"] = 0 if entry["still_running"] and entry["first_line"] else (process.returncode or -1)
        stop(process)
        entry["stdout"] = (entry["first_line"] + process.stdout.read())[-4000:]
    return results


def wait_ready(process: subprocess.Popen, url: str = "http://127.0.0.1:8000/v2/health/ready") -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the README's server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the README's server did not get ready")


def main(readme: Path, workdir: Path, out: Path) -> int:
    blocks = marked_blocks(readme.read_text())
    [serve] = [b for b in blocks if "serve" in b.options]
    results: list[dict] = []
    for block in [b for b in blocks if "alone" in b.options]:
        results += run_block(block, workdir)
    log = open(workdir / "server.log", "w")
    [command] = serve.commands
    server = popen(serve, command, workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(server)
        for block in [b for b in blocks if not {"serve", "alone"} & set(b.options)]:
            results += run_block(block, workdir)
    finally:
        rc = stop(server)
        log.close()
    results.append({"line": serve.line, "command": command, "rc": rc,
                    "stdout": (workdir / "server.log").read_text(errors="replace")[-4000:]})
    out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
