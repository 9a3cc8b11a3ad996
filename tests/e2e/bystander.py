"""A bystander's latency while someone else sends large JSON bodies: shared by the e2e test and by hand runs
(`python -m tests.e2e.bystander HOST:PORT`)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import numpy as np

SMALL = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)


def _infer_request(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n" + extra + b"\r\n" + body)


def small_binary_request(model: str = "tiny") -> bytes:
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 64}}]}).encode()
    return _infer_request(f"/v2/models/{model}/infer", header + SMALL.tobytes(),
                          b"Inference-Header-Content-Length: " + str(len(header)).encode() + b"\r\n")


def large_json_request(json_bytes: int, model: str = "tiny") -> bytes:
    """A JSON infer of about `json_bytes` (a [1, n] FP32 tensor; the model refuses the shape after parsing it)."""
    n = json_bytes // 20
    data = np.random.default_rng(2).standard_normal(n).astype(np.float32).tolist()
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, n], "datatype": "FP32", "data": data}]}).encode()
    return _infer_request(f"/v2/models/{model}/infer", body)


class KeepAlive:
    """One keep-alive HTTP connection reading exactly one response per request."""

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        host, port = address.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def call(self, request: bytes) -> int:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self._recv()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        while len(rest) < length:
            self.buffer = head + b"\r\n\r\n" + rest
            self._recv()
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
        self.buffer = rest[length:]
        return int(head.split(b" ")[1])

    def _recv(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def latencies(address: str, count: int) -> np.ndarray:
    conn = KeepAlive(address)
    request = small_binary_request()
    out = np.empty(count)
    try:
        for i in range(count):
            start = time.perf_counter()
            status = conn.call(request)
            out[i] = time.perf_counter() - start
            assert status == 200, status
    finally:
        conn.close()
    return out


class LargeJsonSender:
    """Sends large JSON infers back to back on its own connection while `active` is set; records the answers."""

    def __init__(self, address: str, json_bytes: int) -> None:
        self.address, self.request = address, large_json_request(json_bytes)
        self.statuses: list[int] = []
        self.active = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # The load generator shares the 2 cores with the server and the bystander: at low priority it measures
        # the server's fairness, not how the test machine schedules its own client threads.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        conn = KeepAlive(self.address, timeout=120)
        try:
            while not self._stop.is_set():
                if self.active.wait(0.05):
                    self.statuses.append(conn.call(self.request))
        finally:
            conn.close()

    def __enter__(self) -> LargeJsonSender:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self.active.clear()
        self._thread.join(120)


def measure(address: str, json_bytes: int, rounds: int = 4, per_window: int = 1000) -> dict[str, object]:
    """Alternating quiet and loaded windows, so the shared machine's own noise falls on both alike."""
    latencies(address, 200)  # warm up
    base, loaded = [], []
    with LargeJsonSender(address, json_bytes) as sender:
        for _ in range(rounds):
            base.append(latencies(address, per_window))
            sender.active.set()
            answered = len(sender.statuses)
            while len(sender.statuses) == answered:  # one large body answered: the load is on
                time.sleep(0.005)
            loaded.append(latencies(address, per_window))
            sender.active.clear()
    during = len(sender.statuses)
    b, lo = np.concatenate(base), np.concatenate(loaded)
    return {"base_p50_ms": 1e3 * float(np.percentile(b, 50)), "base_p99_ms": 1e3 * float(np.percentile(b, 99)),
            "loaded_p50_ms": 1e3 * float(np.percentile(lo, 50)),
            "loaded_p99_ms": 1e3 * float(np.percentile(lo, 99)), "large_answered": during,
            "large_statuses": sorted(set(sender.statuses))}


if __name__ == "__main__":
    import sys

    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 7_000_000)))
