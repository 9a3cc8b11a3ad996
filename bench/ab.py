"""A/B of this checkout against another git revision, both servers up at once, perf_analyzer rounds interleaved.

    .venv/bin/python bench/ab.py [--ref HEAD~1] [--model tiny_py] [--protocols grpc,http] [--rounds 3] [-c 8]

Why: this machine drifts by a quarter between minutes, so a number measured now cannot be compared with one from
an hour ago; a change is judged by two servers measured in the same minutes, the order alternating each round.
The other revision is checked out in a temporary git worktree and run with `PYTHONPATH=<worktree>/src` (the
installed packages are shared). The repository is bench/python_models.py's (`tiny`, the batching python model
`tiny_py`, ...). Needs perf_analyzer in .peers/ (`python -m bench kserve` sets it up).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from bench.common import running_server  # noqa: E402
from bench.python_models import build_repository  # noqa: E402


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="twinfer-ab-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), ref], check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)


@contextlib.contextmanager
def server_from(repo: Path, src: Path) -> Iterator[dict]:
    """`twinfer serve` importing twinfer from `src` (PYTHONPATH comes before the editable install)."""
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)
    try:
        context = running_server(repo)
        ports, _ = context.__enter__()
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    try:
        yield ports
    finally:
        context.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", default="HEAD~1", help="the other revision (default HEAD~1)")
    parser.add_argument("--model", default="tiny_py")
    parser.add_argument("--protocols", default="grpc,http")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    from bench.loads import perf_analyzer
    from bench.peers import PeerError

    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="twinfer-ab-repo-") as tmp, ExitStack() as stack:
        other = stack.enter_context(worktree(args.ref))
        repo = build_repository(Path(tmp) / "repo")
        systems = {args.ref: stack.enter_context(server_from(repo, other / "src")),
                   "this checkout": stack.enter_context(server_from(repo, ROOT / "src"))}
        names = list(systems)
        for round_index in range(args.rounds):
            for protocol in args.protocols.split(","):
                for name in names if round_index % 2 == 0 else names[::-1]:
                    try:
                        rate, p50, p99 = perf_analyzer(f"127.0.0.1:{systems[name][protocol]}", protocol, args.model,
                                                       args.concurrency, quick=False)
                    except PeerError as exc:
                        print(f"round {round_index + 1} {protocol} {name}: failed ({str(exc)[-120:]})", flush=True)
                        continue
                    results.setdefault((protocol, name), []).append(rate)
                    print(f"round {round_index + 1} {protocol:5s} {name:>14s}: {rate:9,.0f} infer/s  p50 {p50:.2f} ms  "
                          f"p99 {p99:.2f} ms", flush=True)
    for protocol in args.protocols.split(","):
        medians = {name: sorted(runs)[len(runs) // 2] for (p, name), runs in results.items() if p == protocol}
        if len(medians) == 2:
            print(f"{protocol}: this checkout / {args.ref} = {medians['this checkout'] / medians[args.ref]:.3f} "
                  f"(medians {medians['this checkout']:,.0f} / {medians[args.ref]:,.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
