"""Soak: a server under steady load for a long time, with hot reloads and config changes, sampled every minute.

    .venv/bin/python bench/soak.py [--minutes 60] [--reload-every 5] [--config-every 10] [--json out.json]

One `twinfer serve` (with a config server and a service group, as in production) on the tiny model and the face
model. Its capacity is measured first (a closed loop over TCP, HTTP and gRPC for a few seconds); the soak then
sends 70 % of each transport's share of it, paced, plus face streams at 30 fps over UDP. Every
`--reload-every` minutes a new version of tiny is published (hot reload); every `--config-every` minutes the
group's settings change on the config server (applied live). Every minute: the server's RSS and open file
descriptors, and each transport's p99 and errors over that minute. At the end: the RSS drift (least-squares slope,
MB/h, warm-up minute excluded), the fd change, and the p99s. Goal (issue #17): drift < 1 MB/h, no fd growth, p99
flat. Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

LOAD_FRACTION = 0.7
STREAM_FPS = 30.0
TOKEN = "soak-write-token"
GROUP = "soak"
X = np.ones((1, 16), np.float32)
HTTP_BODY = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                    "data": [1.0] * 16}]}).encode()


def _limit_address_space() -> None:
    """A leak fails the soak with a MemoryError in the server, not the machine (4 GB of address space)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4_000_000_000, 4_000_000_000))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_file(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args[:4]} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return json.loads(path.read_text())


def put_group(port: int, settings: dict) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/groups/{GROUP}", method="PUT",
                                     data=json.dumps({"settings": settings}).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["version"]


def proc_sample(pid: int) -> tuple[float, int]:
    """(RSS MB, open fds) of the server process."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd"))


class Transport:
    """One paced client thread: `rate` requests/s (0 = closed loop), latencies and errors per window."""

    def __init__(self, name: str, call) -> None:
        self.name, self._call = name, call
        self.rate = 0.0
        self.latencies: list[float] = []
        self.errors = 0
        self.total = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"soak-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def take(self) -> tuple[list[float], int]:
        with self._lock:
            latencies, errors, self.latencies, self.errors = self.latencies, self.errors, [], 0
        return latencies, errors

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            if self.rate > 0:
                next_at += 1.0 / self.rate
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -1.0:
                    next_at = time.monotonic()  # far behind: do not burst to catch up
            started = time.perf_counter()
            try:
                self._call()
                ok = True
            except Exception:  # noqa: BLE001 - every failure counts; the client reconnects below
                ok = False
            elapsed = time.perf_counter() - started
            with self._lock:
                self.total += 1
                if ok:
                    self.latencies.append(elapsed)
                else:
                    self.errors += 1


def tcp_caller(port: int):
    from twinfer.client import Client

    state = {"client": Client("127.0.0.1", port)}

    def call() -> None:
        try:
            state["client"].infer("tiny", {"INPUT0": X})
        except Exception:
            state["client"].close()
            state["client"] = Client("127.0.0.1", port)
            raise

    return call


def http_caller(port: int):
    state = {"conn": http.client.HTTPConnection("127.0.0.1", port, timeout=10)}

    def call() -> None:
        conn = state["conn"]
        try:
            conn.request("POST", "/v2/models/tiny/infer", HTTP_BODY, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
        except Exception:
            conn.close()
            state["conn"] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            raise

    return call


def grpc_caller(port: int):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    infer_input = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    infer_input.set_data_from_numpy(X)

    def call() -> None:
        client.infer("tiny", [infer_input], client_timeout=10)

    return call


class Streams:
    """`count` face streams at STREAM_FPS to a native receiver in this process; results counted per window."""

    def __init__(self, tcp_port: int, count: int, frames: list[np.ndarray]) -> None:
        from twinfer.client import Client
        from twinfer.client.streams import StreamSender, target

        self._listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._client = Client("127.0.0.1", tcp_port)
        receiver = target("native", f"127.0.0.1:{self._listener.getsockname()[1]}")
        self._senders = [StreamSender(self._client, "face_blendshapes", 256, 256, targets=[receiver])
                         for _ in range(count)]
        self._frames = frames
        self.latencies: list[float] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._receive, daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def take(self) -> tuple[list[float], int]:
        with self._lock:
            latencies, sent, self.latencies, self.sent = self.latencies, self.sent, [], 0
        return latencies, sent

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for sender in self._senders:
            sender.close()
        self._client.close()
        self._listener.close()

    def _send(self) -> None:
        start, tick, pinged = time.monotonic(), 0, time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - pinged > 20:  # the session's idle timeout counts TCP only, not the UDP frames
                self._client.ping()
                pinged = time.monotonic()
            due = start + tick / STREAM_FPS
            if (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
            for sender in self._senders:
                sender.send_frame(self._frames[tick % len(self._frames)])
            with self._lock:
                self.sent += len(self._senders)
            tick += 1

    def _receive(self) -> None:
        from twinfer.protocol import game_pb2

        while not self._stop.is_set():
            try:
                data = self._listener.recv(65535)
            except (TimeoutError, OSError):
                continue
            latency = (time.time_ns() - game_pb2.StreamResult.FromString(data).capture_time_ns) / 1e9
            with self._lock:
                self.latencies.append(latency)


def p99_ms(latencies: list[float]) -> float:
    return float(np.percentile(np.asarray(latencies) * 1e3, 99)) if latencies else float("nan")


def slope_per_hour(values: list[float], minutes: list[float]) -> float:
    if len(values) < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(minutes) / 60.0, np.asarray(values), 1)[0])


def build_repository(repo: Path) -> None:
    from twinfer.atomic_files import write_atomically
    from twinfer.demo_models import build_tiny, copy_shipped_face_model, face_config_text, write_face_validation_set

    build_tiny(repo / "tiny" / "1" / "model.onnx")
    copy_shipped_face_model(repo / "face_blendshapes" / "1" / "model.onnx")
    write_face_validation_set(repo / "face_blendshapes" / "validation.npz")
    write_atomically(repo / "face_blendshapes" / "config.yaml", lambda tmp: tmp.write_text(face_config_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--reload-every", type=float, default=5.0, help="minutes between hot reloads")
    parser.add_argument("--config-every", type=float, default=10.0, help="minutes between config changes")
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--streams", type=int, default=2, help="face streams at 30 fps")
    parser.add_argument("--probe-seconds", type=float, default=6.0)
    parser.add_argument("--json", type=Path, help="write the samples and the summary here")
    args = parser.parse_args(argv)

    from twinfer.demo_models import build_tiny
    from twinfer.sources.synthetic_face import synthetic_frames

    with tempfile.TemporaryDirectory(prefix="twinfer-soak-") as tmp_dir:
        tmp = Path(tmp_dir)
        repo = tmp / "repo"
        build_repository(repo)
        frames = [image for image, _ in (next(g) for g in [synthetic_frames(STREAM_FPS)] * 30)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWINFER_")}
        cs_port, cs_log = free_port(), tmp / "config-server.log"
        with open(cs_log, "wb") as out:
            config_server = subprocess.Popen(
                [sys.executable, "-m", "twinfer", "config-server", "--host", "127.0.0.1", "--port", str(cs_port),
                 "--store", str(tmp / "store"), "--ports-file", str(tmp / "cs.json")],
                stdout=out, stderr=subprocess.STDOUT, env={**env, "TWINFER_CONFIG_WRITE_TOKEN": TOKEN})
        server = None
        try:
            wait_file(tmp / "cs.json", config_server, cs_log)
            settings = {"repository_poll_s": 1.0, "idle_timeout_s": 120.0}
            put_group(cs_port, settings)
            log = tmp / "server.log"
            with open(log, "wb") as out:
                server = subprocess.Popen(
                    [sys.executable, "-m", "twinfer", "serve", "--model-repository", str(repo), "--insecure-dev",
                     "--host", "127.0.0.1", "--tcp-port", "0", "--udp-port", "0", "--http-port", "0",
                     "--grpc-port", "0", "--metrics-port", "0", "--ports-file", str(tmp / "ports.json"),
                     "--log-level", "info", "--config-server", f"http://127.0.0.1:{cs_port}",
                     "--service-group", GROUP],
                    stdout=out, stderr=subprocess.STDOUT, preexec_fn=_limit_address_space,
                    env={**env, "ORT_DISABLE_TELEMETRY": "1", "TWINFER_CONFIG_CACHE_DIR": str(tmp / "cache")})
            ports = wait_file(tmp / "ports.json", server, log)
            transports = [Transport("tcp", tcp_caller(ports["tcp"])), Transport("http", http_caller(ports["http"])),
                          Transport("grpc", grpc_caller(ports["grpc"]))]
            for t in transports:
                t.start()
            time.sleep(args.probe_seconds)
            capacity = {t.name: len(t.take()[0]) / args.probe_seconds for t in transports}
            total = sum(capacity.values())
            for t in transports:
                t.rate = LOAD_FRACTION * capacity[t.name]
            print(f"capacity (closed loop, all three at once): {total:,.0f} req/s "
                  f"({', '.join(f'{k} {v:,.0f}' for k, v in capacity.items())}); soak at {LOAD_FRACTION:.0%} of "
                  f"each + {args.streams} face streams at {STREAM_FPS:g} fps", flush=True)
            streams = Streams(ports["tcp"], args.streams, frames)
            streams.start()
            for t in transports:
                t.take()
            samples: list[dict] = []
            start = time.monotonic()
            wanted = max(1, round(args.minutes * 60 / args.sample_every))
            next_sample, next_reload, next_config = args.sample_every, args.reload_every * 60, args.config_every * 60
            version, group_version = 1, 1
            reloads = config_changes = 0
            while len(samples) < wanted:
                time.sleep(max(0.05, min(next_sample, next_reload, next_config) - (time.monotonic() - start)))
                now = time.monotonic() - start
                closing = now > args.minutes * 60 - 10  # nothing new in the last 10 s: it could not settle
                if now >= next_reload and not closing:
                    next_reload += args.reload_every * 60
                    version += 1
                    build_tiny(repo / "tiny" / str(version) / "model.onnx")
                    reloads += 1
                if now >= next_config and not closing:
                    next_config += args.config_every * 60
                    settings["idle_timeout_s"] = 120.0 + group_version % 2
                    group_version = put_group(cs_port, settings)
                    config_changes += 1
                if now < next_sample:
                    continue
                next_sample += args.sample_every
                rss, fds = proc_sample(server.pid)
                row = {"minute": round(now / 60, 2), "rss_mb": round(rss, 1), "fds": fds}
                for t in transports:
                    latencies, errors = t.take()
                    row[f"{t.name}_rps"] = round(len(latencies) / args.sample_every, 1)
                    row[f"{t.name}_p99_ms"] = round(p99_ms(latencies), 2)
                    row[f"{t.name}_errors"] = errors
                latencies, sent = streams.take()
                row["stream_p99_ms"] = round(p99_ms(latencies), 2)
                row["stream_delivered"] = round(len(latencies) / max(sent, 1), 3)
                samples.append(row)
                print(json.dumps(row), flush=True)
            streams.stop()
            for t in transports:
                t.stop()
            from twinfer.client import Client

            with Client("127.0.0.1", ports["tcp"]) as client:
                served = {m.name: list(m.versions) for m in client.models()}
            steady = samples[1:] if len(samples) > 2 else samples
            summary = {
                "minutes": args.minutes, "capacity_rps": round(total, 1), "load_fraction": LOAD_FRACTION,
                "hot_reloads": reloads, "config_changes": config_changes,
                "tiny_version_published_last": version, "tiny_versions_served_at_end": served.get("tiny"),
                "group_version_last": group_version,
                "rss_first_mb": samples[0]["rss_mb"], "rss_last_mb": samples[-1]["rss_mb"],
                "rss_drift_mb_per_h": round(slope_per_hour([s["rss_mb"] for s in steady],
                                                           [s["minute"] for s in steady]), 2),
                "fds_first": samples[0]["fds"], "fds_last": samples[-1]["fds"],
                "errors": sum(s[f"{t.name}_errors"] for s in samples for t in transports),
                **{f"{t.name}_p99_ms_first_last": [samples[0][f"{t.name}_p99_ms"], samples[-1][f"{t.name}_p99_ms"]]
                   for t in transports},
                "stream_p99_ms_first_last": [samples[0]["stream_p99_ms"], samples[-1]["stream_p99_ms"]],
                "applied_in_log": log.read_text(errors="replace").count(": applied "),
            }
            print("summary:", json.dumps(summary), flush=True)
            if args.json:
                args.json.write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
        finally:
            for proc in (server, config_server):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
