"""Pipelined tiny-model inference over the game protocol (TCP) next to raw in-process ONNX Runtime.

    .venv/bin/python bench/tcp_tiny.py [--seconds 10] [--connections 4] [--window 32]

Both numbers come from the same run on the same machine. The load generator is a lean Twisted protocol that keeps
`window` requests in flight on each of `connections` connections (requests are pre-encoded; replies are parsed but
not converted to numpy), so it costs the server's cores as little as a client can. On a 2-core machine the client
and server share the CPU: compare the ratio, not the absolute numbers, across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from bench.peers import tree_cpu_seconds  # noqa: E402
from bench.common import demo_repository, percentiles_ms, running_server  # noqa: E402


def raw_onnxruntime(model_path: Path, seconds: float, batch: int = 1) -> tuple[float, float, float]:
    """Back-to-back sess.run on one thread: calls/s, p50 ms, p99 ms."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    x = np.ones((batch, 16), np.float32)
    for _ in range(2000):
        sess.run(["OUTPUT0"], {"INPUT0": x})
    lat: list[float] = []
    t0 = time.perf_counter()
    while (t := time.perf_counter()) < t0 + seconds:
        sess.run(["OUTPUT0"], {"INPUT0": x})
        lat.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    p50, p99 = percentiles_ms(lat)
    return len(lat) / elapsed, p50, p99


def tcp_pipelined(port: int, seconds: float, connections: int, window: int,
                  server_pid: int | None = None) -> tuple[float, float, float, int, float | None]:
    """requests/s, p50 ms, p99 ms, errors, and the server's CPU seconds over the measured window (when its pid is
    given): a closed loop with `window` in flight per connection."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol

    from twinfer.protocol import game_pb2
    from twinfer.protocol.framing import FrameDecoder, encode_frame
    from twinfer.protocol.tensors import numpy_to_tensor

    template = game_pb2.ClientMessage()
    template.infer.model = "tiny"
    numpy_to_tensor("INPUT0", np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32),
                    template.infer.inputs.add())
    state = {"measuring": False, "done": 0, "errors": 0, "lat": [], "stop_at": 0.0}

    class Load(Protocol):
        def connectionMade(self) -> None:
            self.decoder = FrameDecoder()
            self.next_id = 1
            self.sent_at: dict[int, float] = {}
            for _ in range(window):
                self.send()

        def send(self) -> None:
            template.request_id = self.next_id
            self.sent_at[self.next_id] = time.perf_counter()
            self.next_id += 1
            self.transport.write(encode_frame(template.SerializeToString()))

        def dataReceived(self, data: bytes) -> None:
            now = time.perf_counter()
            reply = game_pb2.ServerMessage()
            for _, body in self.decoder.feed(data):
                reply.ParseFromString(body)
                started = self.sent_at.pop(reply.request_id)
                if state["measuring"]:
                    state["done"] += 1
                    state["lat"].append(now - started)
                    if reply.HasField("error"):
                        state["errors"] += 1
                if now < state["stop_at"]:
                    self.send()
            if not self.sent_at and now >= state["stop_at"]:
                self.transport.loseConnection()

    warmup = 1.0
    t_start = time.perf_counter()
    state["stop_at"] = t_start + warmup + seconds
    marks: dict[str, float] = {}

    def begin_measuring() -> None:
        state["measuring"] = True
        marks["t0"] = time.perf_counter()
        if server_pid:
            marks["cpu0"] = tree_cpu_seconds(server_pid)

    def end() -> None:
        state["measuring"] = False
        marks["t1"] = time.perf_counter()
        if server_pid:
            marks["cpu1"] = tree_cpu_seconds(server_pid)
        reactor.callLater(2.0, reactor.stop)

    for _ in range(connections):
        connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Load())
    reactor.callLater(warmup, begin_measuring)
    reactor.callLater(warmup + seconds, end)
    reactor.run()
    elapsed = marks["t1"] - marks["t0"]
    p50, p99 = percentiles_ms(state["lat"])
    cpu = marks["cpu1"] - marks["cpu0"] if server_pid else None
    return state["done"] / elapsed, p50, p99, state["errors"], cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--window", type=int, default=32, help="requests in flight per connection")
    parser.add_argument("--port", type=int, help="load a server already running on 127.0.0.1:PORT (serving the "
                        "demo `tiny` model) instead of starting one; no raw baseline then (python -m bench has it)")
    parser.add_argument("--server-pid", type=int, help="with --port: report that process tree's CPU seconds over "
                        "the measured window")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    args = parser.parse_args(argv)
    if args.port:
        rate, p50, p99, errors, cpu = tcp_pipelined(args.port, args.seconds, args.connections, args.window,
                                                    args.server_pid)
        print(f"twinfer TCP pipelined ({args.connections}x{args.window} in flight): {rate:,.0f} req/s, "
              f"p50 {p50:.3f} ms, p99 {p99:.3f} ms, errors {errors}")
        if args.json:
            print(json.dumps({"tcp": [rate, p50, p99], "errors": errors, "window": [args.connections, args.window],
                              "server_cpu_s": cpu, "seconds": args.seconds}))
        return 1 if errors else 0
    with demo_repository() as repo:
        raw_rate, raw_p50, raw_p99 = raw_onnxruntime(repo / "tiny" / "1" / "model.onnx", args.seconds)
        with running_server(repo) as (ports, proc):
            rate, p50, p99, errors, cpu = tcp_pipelined(ports["tcp"], args.seconds, args.connections, args.window,
                                                        proc.pid)
    print(f"tiny model, batch 1 per request, {args.seconds:g} s each, {os.cpu_count()} cores")
    print(f"{'system':<44} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs raw':>7}")
    print(f"{'onnxruntime in-process (1 thread)':<44} {raw_rate:>10,.0f} {raw_p50:>8.3f} {raw_p99:>8.3f} {1:>7.3f}")
    label = f"twinfer TCP pipelined ({args.connections}x{args.window} in flight)"
    print(f"{label:<44} {rate:>10,.0f} {p50:>8.3f} {p99:>8.3f} {rate / raw_rate:>7.3f}")
    if errors:
        print(f"errors: {errors}")
    if args.json:
        print(json.dumps({"raw": [raw_rate, raw_p50, raw_p99], "tcp": [rate, p50, p99], "errors": errors,
                          "window": [args.connections, args.window],
                          "server_cpu_s": cpu, "seconds": args.seconds}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
