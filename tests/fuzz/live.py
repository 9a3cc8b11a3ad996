"""The live mutation fuzzer: mutated inputs against a real server on every surface (game protocol over TCP,
stream datagrams over UDP, KServe HTTP, KServe gRPC), with a bystander client measuring what that costs others.

    python -m tests.fuzz.live --inputs 1000000          # what `make fuzz` runs
    python -m tests.fuzz.live --inputs 20000 --json out.json

The server runs with auth on (a token secret and an admin token) and under an address-space limit, so a defect
that allocates without bound fails the run instead of taking the machine down. Mutations start from valid inputs,
most of them authenticated (logged-in sessions, bearer headers, datagrams re-signed with the stream key after
mutating), so they reach the code behind the checks and not only the checks.

Phases: the bystander alone; the bystander beside *valid* traffic at the fuzzer's rate (the baseline: what load of
that size costs anyone); the bystander beside the mutated traffic. The run passes when the server never dies, its
log has no traceback, its RSS after the run is within 10 % of before, the bystander's p99 beside the mutated
traffic is within 2x of its p99 beside the valid traffic (bad input costs no more than good input), and every
connection the fuzzer opened is gone from the server afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from tests.e2e.conftest import ATTACK_ADDRESS_SPACE, RunningServer, start_server
from tests.fuzz.mutate import mutate, splice
from tests.support import make_repository
from twinfer.client import Client
from twinfer.client.streams import StreamSender
from twinfer.protocol import game_pb2
from twinfer.protocol.framing import encode_frame
from twinfer.security.tokens import TokenAuthority
from twinfer.streaming import datagram as dg

SECRET = "live-fuzz-secret"
ADMIN = "live-fuzz-admin"
SURFACES = ("tcp", "udp", "http", "grpc")
WEIGHTS = {"tcp": 0.4, "udp": 0.35, "http": 0.15, "grpc": 0.10}


@dataclass
class Report:
    inputs: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    crashed: bool = False
    tracebacks: int = 0
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    bystander_p99_ms: dict[str, float] = field(default_factory=dict)
    bystander_failures: int = 0
    leftover: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


# --- the server and what we read of it --------------------------------------------------------------------------

def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _metric(server: RunningServer, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics']}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- seeds ------------------------------------------------------------------------------------------------------

def _game_seeds(token: str) -> list[bytes]:
    x = np.ones((1, 16), np.float32)
    infer = game_pb2.ClientMessage(request_id=5)
    infer.infer.model = "tiny"
    infer.infer.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16], data=x.tobytes())
    opened = game_pb2.ClientMessage(request_id=6)
    opened.open_stream.model = "face"
    opened.open_stream.width = opened.open_stream.height = 32
    opened.open_stream.targets.add(kind="vmc", host="127.0.0.1", port=9)
    subscribe = game_pb2.ClientMessage(request_id=7)
    subscribe.subscribe.stream_id = 1
    subscribe.subscribe.target.kind = "native"
    subscribe.subscribe.target.host = "255.255.255.255"
    return [m.SerializeToString() for m in (
        game_pb2.ClientMessage(request_id=1, login=game_pb2.LoginRequest(token=token, client_name="fuzz")),
        game_pb2.ClientMessage(request_id=2, ping=game_pb2.PingRequest(client_time_ns=1)),
        game_pb2.ClientMessage(request_id=3, list_models=game_pb2.ListModelsRequest()),
        game_pb2.ClientMessage(request_id=4, model_metadata=game_pb2.ModelMetadataRequest(model="tiny")),
        infer, opened, subscribe,
        game_pb2.ClientMessage(request_id=8, close_stream=game_pb2.CloseStreamRequest(stream_id=1)),
    )]


def _http_seeds(token: str) -> list[bytes]:
    auth = f"Authorization: Bearer {token}\r\n".encode()
    x = np.ones((1, 16), np.float32)
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 64}}],
                         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
    return [
        b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: f\r\n%sContent-Length: %d\r\n\r\n%s" % (auth, len(body), body),
        b"POST /v2/models/tiny/versions/1/infer HTTP/1.1\r\nHost: f\r\n%sInference-Header-Content-Length: %d\r\n"
        b"Content-Length: %d\r\n\r\n%s%s" % (auth, len(header), len(header) + 64, header, x.tobytes()),
        b"GET /v2/models/tiny HTTP/1.1\r\nHost: f\r\n%s\r\n" % auth,
        b"GET /v2/models/tiny/config HTTP/1.1\r\nHost: f\r\n%s\r\n" % auth,
        b"GET /v2/models/stats HTTP/1.1\r\nHost: f\r\n%s\r\n" % auth,
        b"POST /v2/repository/index HTTP/1.1\r\nHost: f\r\n%sContent-Length: 15\r\n\r\n{\"ready\": true}" % auth,
        b"POST /v2/repository/models/tiny/load HTTP/1.1\r\nHost: f\r\nAuthorization: Bearer x\r\n"
        b"Content-Length: 0\r\n\r\n",
        b"GET /v2/health/ready HTTP/1.0\r\n\r\n",
    ]


def _grpc_seeds() -> list[tuple[str, bytes]]:
    infer = pb.ModelInferRequest(model_name="tiny", id="f")
    infer.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
    infer.raw_input_contents.append(np.ones(16, np.float32).tobytes())
    typed = pb.ModelInferRequest(model_name="tiny")
    typed.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16]).contents.fp32_contents.extend([1.0] * 16)
    service = "/inference.GRPCInferenceService/"
    return [
        (service + "ModelInfer", infer.SerializeToString()),
        (service + "ModelInfer", typed.SerializeToString()),
        (service + "ModelMetadata", pb.ModelMetadataRequest(name="tiny").SerializeToString()),
        (service + "ModelConfig", pb.ModelConfigRequest(name="tiny", version="1").SerializeToString()),
        (service + "ModelStatistics", pb.ModelStatisticsRequest(name="tiny").SerializeToString()),
        (service + "ModelReady", pb.ModelReadyRequest(name="tiny").SerializeToString()),
        (service + "RepositoryIndex", pb.RepositoryIndexRequest(ready=True).SerializeToString()),
        (service + "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="tiny").SerializeToString()),
        (service + "ServerMetadata", b""),
    ]


# --- the surfaces -------------------------------------------------------------------------------------------------

class TcpSurface:
    """Connections that log in (mostly), send a burst of mutated frames, read what is there and go."""

    def __init__(self, server: RunningServer, token: str, rng: random.Random) -> None:
        self.port, self.rng = server.tcp, rng
        self.seeds = _game_seeds(token)

    def batch(self, n: int, mutated: bool = True) -> int:
        rng = self.rng
        frames = [encode_frame(self.seeds[0])] if rng.random() < 0.7 or not mutated else []
        for _ in range(n):
            seed = rng.choice(self.seeds[1:5]) if not mutated else rng.choice(self.seeds)
            if not mutated:
                frames.append(encode_frame(seed))
                continue
            body = mutate(seed, rng) if rng.random() < 0.85 else splice(seed, rng.choice(self.seeds), rng)
            frame = encode_frame(body)
            frames.append(mutate(frame, rng, max_ops=2) if rng.random() < 0.1 else frame)
        data = b"".join(frames)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            try:
                for i in range(0, len(data), 8192):
                    sock.sendall(data[i : i + 8192])
                sock.settimeout(0.005)
                sock.recv(1 << 16)  # take an answer if one is there; unread ones are the server's to bound
            except OSError:
                pass  # the server closed (kicked) this connection: expected for many mutations
            if mutated and rng.random() < 0.3:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # leave with a RST
        return n


class UdpSurface:
    """A real stream (opened by a logged-in session); datagrams mutated then re-signed with its key, forged ones,
    and valid fragments out of order."""

    def __init__(self, server: RunningServer, token: str, rng: random.Random) -> None:
        self.server, self.token, self.rng = server, token, rng
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.sink.setblocking(False)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client: Client | None = None
        self.sender: StreamSender | None = None
        self.sequence = 1
        self._open()

    def _open(self) -> None:
        self.close()
        self.client = Client("127.0.0.1", self.server.tcp, token=self.token, client_name="fuzz-udp")
        target = game_pb2.StreamTarget(kind="native", host="127.0.0.1", port=self.sink.getsockname()[1])
        self.sender = StreamSender(self.client, "face", 32, 32, "GRAY8", [target])
        self.signer = dg.Signer(bytes(self.sender.info.key))
        self.address = (self.sender.info.udp_host, self.sender.info.udp_port)

    def batch(self, n: int, mutated: bool = True) -> int:
        if not mutated:
            self.valid(n)
            return n
        rng, sid = self.rng, self.sender.stream_id
        for _ in range(n):
            self.sequence += 1
            frame = rng.randbytes(32 * 32)
            parts = dg.fragment_frame(self.signer, sid, self.sequence, time.time_ns(), frame,
                                      rng.choice((200, 600, 1200)))
            raw = rng.choice(parts) if rng.random() < 0.9 else dg.heartbeat(self.signer, sid, self.sequence, 0)
            roll = rng.random()
            if roll < 0.5:  # authentic but mutated: reaches parsing and reassembly
                signed = mutate(raw[: -dg.TAG_BYTES], rng, max_ops=3)
                data = signed + self.signer.tag(signed)
            elif roll < 0.75:
                data = mutate(raw, rng)  # forged
            else:
                data = raw  # valid fragment, usually of a frame that never completes
            try:
                self.sock.sendto(data, self.address)
            except OSError:
                pass
        self.sock.sendto(dg.heartbeat(self.signer, sid, self.sequence + 1, time.time_ns()), self.address)
        self.sequence += 2
        for part in dg.fragment_frame(self.signer, sid, self.sequence, time.time_ns(), bytes(1024), 600):
            self.sock.sendto(part, self.address)  # one whole frame, so the stream keeps running
        try:
            while self.sink.recv(65536):
                pass
        except BlockingIOError:
            pass
        return n

    def valid(self, n: int) -> None:
        """n datagrams of whole, valid frames (the baseline load)."""
        sent = 0
        while sent < n:
            self.sequence += 1
            parts = dg.fragment_frame(self.signer, self.sender.stream_id, self.sequence, time.time_ns(),
                                      self.rng.randbytes(32 * 32), 600)
            for part in parts:
                self.sock.sendto(part, self.address)
            sent += len(parts)
        try:
            while self.sink.recv(65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for closer in (self.sender, self.client):
            try:
                if closer is not None:
                    closer.close()
            except Exception:  # noqa: BLE001 - the server may have closed the stream first
                pass
        self.sender = self.client = None


class HttpSurface:
    def __init__(self, server: RunningServer, token: str, rng: random.Random) -> None:
        self.port, self.rng = server.ports["http"], rng
        self.seeds = _http_seeds(token)

    def batch(self, n: int, mutated: bool = True) -> int:
        rng = self.rng
        sent = 0
        while sent < n:
            k = min(rng.randrange(1, 5), n - sent)
            if not mutated:
                data = b"".join(rng.choice(self.seeds[:6]) for _ in range(k))
            else:
                data = b"".join(mutate(rng.choice(self.seeds), rng) if rng.random() < 0.9 else
                                splice(rng.choice(self.seeds), rng.choice(self.seeds), rng) for _ in range(k))
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                try:
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR) if rng.random() < 0.5 or not mutated else None
                    sock.settimeout(0.01)
                    sock.recv(1 << 16)
                except OSError:
                    pass
            sent += k
        return n


class GrpcSurface:
    def __init__(self, server: RunningServer, token: str, rng: random.Random) -> None:
        self.rng = rng
        self.channel = grpc.insecure_channel(server.grpc)
        self.seeds = _grpc_seeds()
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.codes: Counter[str] = Counter()

    def batch(self, n: int, mutated: bool = True) -> int:
        rng = self.rng
        calls = []
        for _ in range(n):
            method, seed = rng.choice(self.seeds[:7] if not mutated else self.seeds)
            other = rng.choice(self.seeds)[1]
            data = seed if not mutated else mutate(seed, rng) if rng.random() < 0.85 else splice(seed, other, rng)
            metadata = (self.metadata if rng.random() < 0.9 or not mutated else
                        (("authorization", "Bearer " + rng.randbytes(8).hex()),))
            call = self.channel.unary_unary(method)  # raw bytes in and out: the server parses what we mutated
            calls.append(call.future(data, timeout=5, metadata=metadata))
        for future in calls:
            try:
                future.result()
                self.codes["OK"] += 1
            except grpc.RpcError as exc:
                self.codes[exc.code().name] += 1
        return n

    def close(self) -> None:
        self.channel.close()


# --- the bystander ----------------------------------------------------------------------------------------------

def _bystander_main(port: int, token: str, interval: float, conn) -> None:
    """In its own process, so the fuzzer's Python work (and its GIL) is not in the bystander's latencies."""
    client = Client("127.0.0.1", port, token=token, client_name="bystander")
    x = np.ones((1, 16), np.float32)
    client.infer("tiny", {"INPUT0": x})  # connected and warm: now its latencies mean something
    conn.send("ready")
    phase, latencies, failures = "alone", {}, 0
    next_at = time.perf_counter()
    while True:
        if conn.poll():
            phase = conn.recv()
            if phase is None:
                break
        start = time.perf_counter()
        try:
            client.infer("tiny", {"INPUT0": x})
            latencies.setdefault(phase, []).append((time.perf_counter() - start) * 1e3)
        except Exception:  # noqa: BLE001 - a failed bystander request is a finding
            failures += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    client.close()
    conn.send((latencies, failures))


class Bystander:
    """A logged-in client in another process doing one small inference every `interval` s; each latency goes to
    the phase it was measured in."""

    def __init__(self, server: RunningServer, token: str, interval: float = 0.004) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_bystander_main, args=(server.tcp, token, interval, child),
                                        daemon=True)
        self.latencies: dict[str, list[float]] = {}
        self.failures = 0

    def phase(self, name: str) -> None:
        self._conn.send(name)

    def p99(self, phase: str) -> float:
        values = self.latencies.get(phase) or [float("nan")]
        return float(np.percentile(values, 99))

    def __enter__(self) -> Bystander:
        self._process.start()
        if not self._conn.poll(60) or self._conn.recv() != "ready":
            raise RuntimeError("the bystander did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._conn.send(None)
        if self._conn.poll(30):
            self.latencies, self.failures = self._conn.recv()
        self._process.join(10)


# --- the run ----------------------------------------------------------------------------------------------------

def _drive(surfaces: dict, inputs: int, rate: float, rng: random.Random, mutated: bool, server: RunningServer,
           report: Report | None = None, out=sys.stdout) -> Counter[str]:
    """`inputs` inputs over the surfaces at `rate` per second, valid or mutated (the same batches either way)."""
    counts: Counter[str] = Counter()
    start = next_report = time.monotonic()
    done = 0
    while done < inputs:
        if server.process.poll() is not None:
            break
        surface = rng.choices(SURFACES, weights=[WEIGHTS[s] for s in SURFACES])[0]
        n = min(rng.randrange(5, 60), inputs - done)
        try:
            counts[surface] += surfaces[surface].batch(n, mutated)
        except (ConnectionError, OSError):
            counts[surface] += n  # sent before the server hung up on us
            if surface == "udp":
                surfaces["udp"]._open()  # the stream was closed (as it may be); open another
        done = sum(counts.values())
        if report is not None and time.monotonic() >= next_report:
            rss = _rss_mb(server.process.pid)
            report.rss_peak_mb = max(report.rss_peak_mb, rss)
            print(f"{done:>9,} inputs {time.monotonic() - start:6.0f} s  rss {rss:6.1f} MB", file=out, flush=True)
            next_report += 10
        _pace(start, done, rate)
    return counts


def _pace(start: float, done: int, rate: float) -> None:
    wait = start + done / rate - time.monotonic()
    if wait > 0:
        time.sleep(wait)


def run(inputs: int, rate: float, seed: int, workdir: Path, baseline_s: float = 5.0, out=sys.stdout) -> Report:
    from twinfer.demo_models import copy_shipped_face_model

    report = Report()
    repo = make_repository(workdir / "repo")
    (repo / "face" / "1").mkdir(parents=True)
    copy_shipped_face_model(repo / "face" / "1" / "model.onnx")
    server = start_server(workdir, repo, env={"TWINFER_AUTH__TOKEN_SECRET": SECRET,
                                              "TWINFER_AUTH__ADMIN_TOKEN": ADMIN},
                          address_space=ATTACK_ADDRESS_SPACE)
    token = TokenAuthority(SECRET).issue("fuzzer", 0)
    rng = random.Random(seed)
    pid = server.process.pid
    try:
        with Bystander(server, TokenAuthority(SECRET).issue("bystander", 0)) as bystander:
            surfaces = {"tcp": TcpSurface(server, token, rng), "udp": UdpSurface(server, token, rng),
                        "http": HttpSurface(server, token, rng), "grpc": GrpcSurface(server, token, rng)}
            time.sleep(baseline_s)
            bystander.phase("beside valid traffic")
            _drive(surfaces, int(rate * baseline_s * 2), rate, rng, False, server)
            fds_before = _open_fds(pid)
            report.rss_before_mb = report.rss_peak_mb = _rss_mb(pid)
            bystander.phase("beside mutated traffic")
            start = time.monotonic()
            report.inputs = dict(_drive(surfaces, inputs, rate, rng, True, server, report, out))
            report.seconds = round(time.monotonic() - start, 1)
            bystander.phase("after")
            surfaces["udp"].close()
            surfaces["grpc"].close()
            time.sleep(1.0)
        report.crashed = server.process.poll() is not None
        # Every connection the fuzzer opened must be gone: with the bystander and the stream client closed too,
        # the server holds no session, no HTTP connection and no more fds than before the mutated traffic.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not report.crashed:
            if (_metric(server, "twinfer_sessions") == 0 and _metric(server, "twinfer_http_connections") == 0
                    and _open_fds(pid) <= fds_before):
                break
            time.sleep(0.2)
        if server.process.poll() is not None:
            report.crashed = True
        else:
            report.leftover = {"sessions": int(_metric(server, "twinfer_sessions")),
                               "http_connections": int(_metric(server, "twinfer_http_connections")),
                               "fds_over_before": max(0, _open_fds(pid) - fds_before)}
            report.rss_after_mb = _rss_mb(pid)
            report.rss_peak_mb = max(report.rss_peak_mb, report.rss_after_mb)
        report.bystander_p99_ms = {phase: round(bystander.p99(phase), 3) for phase in bystander.latencies}
        report.bystander_failures = bystander.failures
    finally:
        if server.process.poll() is None:
            server.stop(60)
        report.tracebacks = server.log().count("Traceback")
    _judge(report)
    return report


def _judge(report: Report) -> None:
    f = report.failures
    if report.crashed:
        f.append("the server died")
    if report.tracebacks:
        f.append(f"{report.tracebacks} tracebacks in the server log")
    if report.rss_after_mb > report.rss_before_mb * 1.10:
        f.append(f"RSS {report.rss_before_mb:.1f} -> {report.rss_after_mb:.1f} MB after the run (> +10 %)")
    p99 = report.bystander_p99_ms
    valid, mutated = p99.get("beside valid traffic", 0), p99.get("beside mutated traffic", 0)
    if valid and mutated > 2 * valid:
        f.append(f"bystander p99 {mutated:.2f} ms beside mutated traffic > 2x {valid:.2f} ms beside valid traffic")
    if report.bystander_failures:
        f.append(f"{report.bystander_failures} bystander requests failed")
    if any(report.leftover.values()):
        f.append(f"left open after the run: {report.leftover}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=4000.0, help="mutated inputs per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    with tempfile.TemporaryDirectory(prefix="twinfer-fuzz-") as tmp:
        report = run(args.inputs, args.rate, args.seed, Path(tmp))
    document = {**asdict(report), "passed": report.passed}
    print(json.dumps(document, indent=2))
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
