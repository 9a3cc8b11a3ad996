"""How many concurrent 60 fps face streams twinfer serves with p99 frame-in -> result-out under 16.7 ms, next to
the raw compute limit of the same model in process, in the same run.

    .venv/bin/python bench/streams.py [--seconds 5] [--max-streams 64]

Raw limit: the face model in ONNX Runtime, in this process, at batch 1, 8 and 16 (best frames/s). Served: N
streams of pre-rendered 256x256 synthetic faces at 60 fps each, their frames spread evenly over each 16.7 ms
period as independent cameras would be (N doubles until p99 breaks 16.7 ms, then a bisection), sent by
--sender-processes processes (each its own connection, its share of the streams and a native receiver for their
results: one Python process sending and receiving everything was what limited the count); latency = receive time -
capture time, both on this machine's clock. Server CPU a frame: the server's CPU seconds over the run / results.
Senders and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import running_server  # noqa: E402

FPS = 60.0
BUDGET_MS = 1000 / 60
STREAMS_PER_SESSION = 8  # the server's default max_streams_per_session


def raw_limit(model: Path, seconds: float) -> tuple[float, int]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    best = (0.0, 1)
    for batch in (1, 8, 16):
        height, width = sess.get_inputs()[0].shape[2:]  # the model's own input size (128 for the trained model)
        x = np.random.default_rng(0).random((batch, 1, height, width), np.float32)
        sess.run(None, {"image": x})
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            sess.run(None, {"image": x})
            n += 1
        rate = n * batch / (time.perf_counter() - t0)
        best = max(best, (rate, batch))
    return best


def _sender_process(tcp_port: int, indices: list[int], total: int, seconds: float, start_at: float,
                    frames: list[bytes], results) -> None:
    """One sender process: its share of the streams (global index i sends at i/total of each frame period, so the
    processes interleave as independent cameras do), a receiver thread for their results, latencies back."""
    from twinfer.client import Client
    from twinfer.client.streams import StreamSender, target
    from twinfer.protocol import game_pb2

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.2)
    latencies: list[float] = []
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                data = listener.recv(65535)
            except TimeoutError:
                continue
            latencies.append((time.time_ns() - game_pb2.StreamResult.FromString(data).capture_time_ns) / 1e6)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    sent = 0
    with ExitStack() as stack:
        # a session may hold STREAMS_PER_SESSION streams (max_streams_per_session): one connection per that many
        clients = [stack.enter_context(Client("127.0.0.1", tcp_port))
                   for _ in range(-(-len(indices) // STREAMS_PER_SESSION))]
        senders = [StreamSender(clients[k // STREAMS_PER_SESSION], "face_blendshapes", 256, 256,
                                targets=[target("native", f"127.0.0.1:{listener.getsockname()[1]}")])
                   for k in range(len(indices))]
        images = [np.frombuffer(f, np.uint8).reshape(256, 256) for f in frames]
        # (due time, sender, global index, frame tick) for every frame of the run, in time order
        schedule = sorted((start_at + (tick + g / total) / FPS, k, g, tick)
                          for tick in range(int(seconds * FPS)) for k, g in enumerate(indices))
        for due, k, g, tick in schedule:
            now = time.time()
            if now < due:
                time.sleep(due - now)
            senders[k].send_frame(images[(tick + g) % len(images)])
            sent += 1
        time.sleep(0.3)
        for sender in senders:
            sender.close()
    stop.set()
    thread.join(1)
    listener.close()
    results.put((np.asarray(latencies, np.float64).tobytes(), sent))


def run_streams(tcp_port: int, streams: int, seconds: float, frames: list[np.ndarray], processes: int = 1,
                server_pid: int | None = None) -> tuple[float, float, float, float]:
    """(p99 ms, delivered frames/s, fraction delivered, server CPU ms a frame) for `streams` streams at 60 fps,
    sent by `processes` sender processes (each with its own connection and receiver), so a Python sender is not
    what limits the count."""
    import multiprocessing

    from bench.peers import tree_cpu_seconds

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    raw = [np.ascontiguousarray(f, np.uint8).tobytes() for f in frames]
    processes = max(1, min(processes, streams))
    start_at = time.time() + 1.5 + 0.25 * processes  # every process is up and has opened its streams by then
    workers = [ctx.Process(target=_sender_process,
                           args=(tcp_port, list(range(p, streams, processes)), streams, seconds, start_at, raw, results))
               for p in range(processes)]
    for worker in workers:
        worker.start()
    while time.time() < start_at:
        time.sleep(min(0.05, max(0.0, start_at - time.time())))
    cpu0 = tree_cpu_seconds(server_pid) if server_pid else 0.0
    latencies, sent = [], 0
    for _ in workers:
        deadline = time.time() + seconds + 60
        while True:
            try:
                data, count = results.get(timeout=1)
                break
            except queue.Empty:
                dead = [w for w in workers if w.exitcode not in (None, 0)]
                if dead or time.time() > deadline:
                    for w in workers:
                        w.kill()
                    raise RuntimeError(f"a sender process failed (exit codes {[w.exitcode for w in workers]})")
        latencies.append(np.frombuffer(data, np.float64))
        sent += count
    cpu = tree_cpu_seconds(server_pid) - cpu0 if server_pid else float("nan")
    for worker in workers:
        worker.join(10)
    merged = np.concatenate(latencies) if latencies else np.zeros(0)
    if not len(merged):
        return float("inf"), 0.0, 0.0, float("nan")
    return (float(np.percentile(merged, 99)), len(merged) / seconds, len(merged) / max(sent, 1),
            cpu * 1e3 / len(merged))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max-streams", type=int, default=64)
    parser.add_argument("--sender-processes", type=int, default=2,
                        help="processes sending the streams (each its own connection and receiver; default 2)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    args = parser.parse_args(argv)
    import tempfile

    from twinfer.demo_models import build_repository
    from twinfer.sources.synthetic_face import synthetic_frames

    frames = [image for image, _ in (next(g) for g in [synthetic_frames(FPS)] * 60)]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        build_repository(repo)
        raw_rate, raw_batch = raw_limit(repo / "face_blendshapes" / "1" / "model.onnx", args.seconds)
        rows = []
        with running_server(repo) as (ports, server):
            n, good, bad = 1, 0, None
            while n <= args.max_streams:
                p99, rate, delivered, cpu_ms = run_streams(ports["tcp"], n, args.seconds, frames,
                                                           args.sender_processes, server.pid)
                rows.append((n, p99, rate, delivered, cpu_ms))
                print(f"  {n:3d} streams: p99 {p99:7.2f} ms, {rate:7.1f} results/s, {100 * delivered:5.1f} % delivered,"
                      f" server CPU {cpu_ms:.3f} ms a frame", flush=True)
                if p99 < BUDGET_MS and delivered >= 0.95:
                    good = n
                    if bad is not None and bad - good <= 1:
                        break
                    n = n * 2 if bad is None else (good + bad) // 2
                else:
                    bad = n
                    if bad - good <= 1:
                        break
                    n = (good + bad) // 2
    best = max((r for r in rows if r[0] == good), default=(0, 0.0, 0.0, 0.0, float("nan")))
    print(f"face model raw ONNX Runtime limit: {raw_rate:,.0f} frames/s (batch {raw_batch}, 1 thread)")
    print(f"largest count of 60 fps streams with p99 < {BUDGET_MS:.1f} ms: {good} "
          f"({best[2]:,.0f} results/s = {best[2] / raw_rate:.3f} x the raw limit; {args.sender_processes} sender "
          f"processes)")
    busiest = max(rows, key=lambda r: r[2], default=None)
    if busiest is not None:
        print(f"server CPU a frame at {busiest[0]} streams: {busiest[4]:.3f} ms "
              f"({1e3 / busiest[4]:,.0f} frames per server CPU-second)")
    if args.json:
        import json

        print(json.dumps({"raw_frames_per_s": raw_rate, "raw_batch": raw_batch, "streams": good,
                          "results_per_s": best[2], "p99_ms": best[1], "sender_processes": args.sender_processes,
                          "server_cpu_ms_per_frame": best[4], "steps": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
