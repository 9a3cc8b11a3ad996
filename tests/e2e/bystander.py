"""A bystander's latency while someone else sends large JSON bodies: shared by the e2e test and by hand runs
(`python -m tests.e2e.bystander HOST:PORT`)."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
from typing import Any

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


def large_binary_request(json_bytes: int, model: str = "tiny") -> bytes:
    """The same tensor as `large_json_request(json_bytes)` would carry, in as many bytes, with the binary extension:
    the same transfer for the server, without the JSON to parse (the model refuses the shape after decoding)."""
    n = json_bytes // 20
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, n], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 4 * n}}]}).encode()
    payload = np.random.default_rng(2).standard_normal(n).astype(np.float32).tobytes()
    padding = max(0, json_bytes - len(header) - len(payload))  # the JSON body's size: pad the header with spaces
    header = header + b" " * padding
    return _infer_request(f"/v2/models/{model}/infer", header + payload,
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


def _send_large(address: str, json_bytes: int, binary: bool, ready: Any, active: Any, stop: Any, answered: Any,
                statuses: Any) -> None:
    """The load generator, in a process of its own at low priority: a thread of the test process would share the
    bystander's GIL (and, niced, hold it while preempted), so the test would measure itself."""
    os.nice(19)
    request = large_binary_request(json_bytes) if binary else large_json_request(json_bytes)
    conn = KeepAlive(address, timeout=120)
    ready.set()
    try:
        while not stop.is_set():
            if active.wait(0.05):
                statuses.put(conn.call(request))
                with answered.get_lock():
                    answered.value += 1
    finally:
        conn.close()


class LargeJsonSender:
    """Sends large JSON infers back to back on its own connection while `active` is set."""

    def __init__(self, address: str, json_bytes: int, binary: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self.active, self._stop, self._ready = context.Event(), context.Event(), context.Event()
        self.answered = context.Value("i", 0)
        self._statuses = context.Queue()
        self._process = context.Process(target=_send_large, args=(address, json_bytes, binary, self._ready, self.active,
                                                                  self._stop, self.answered, self._statuses),
                                        daemon=True)

    def __enter__(self) -> LargeJsonSender:
        self._process.start()
        if not self._ready.wait(120):
            raise RuntimeError("load generator did not start")
        return self

    def statuses(self) -> list[int]:
        out = []
        while self.answered.value > len(out):
            out.append(self._statuses.get(timeout=30))
        return out

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self.active.clear()
        self._process.join(120)
        if self._process.is_alive():
            self._process.kill()


def measure(address: str, json_bytes: int, rounds: int = 4, per_window: int = 1000) -> dict[str, object]:
    """The bystander's latency in alternating windows: quiet, beside large *binary* bodies (the same bytes on the
    wire, nothing to parse: what moving them costs anyone on two shared cores) and beside large JSON bodies (the
    parse on top). Alternating lets the machine's own noise fall on all three alike."""
    latencies(address, 200)  # warm up
    windows: dict[str, list[np.ndarray]] = {"base": [], "binary": [], "loaded": []}
    with LargeJsonSender(address, json_bytes) as json_sender, \
            LargeJsonSender(address, json_bytes, binary=True) as binary_sender:
        for _ in range(rounds):
            windows["base"].append(latencies(address, per_window))
            for name, sender in (("binary", binary_sender), ("loaded", json_sender)):
                answered = sender.answered.value
                sender.active.set()
                while sender.answered.value == answered:  # one large body answered: the load is on
                    time.sleep(0.005)
                windows[name].append(latencies(address, per_window))
                sender.active.clear()
                while sender.answered.value < answered + 1:
                    time.sleep(0.005)
        time.sleep(0.2)
        statuses = json_sender.statuses()
        binary_statuses = binary_sender.statuses()
    out: dict[str, object] = {}
    for name, parts in windows.items():
        joined = np.concatenate(parts)
        out[f"{name}_p50_ms"] = 1e3 * float(np.percentile(joined, 50))
        out[f"{name}_p99_ms"] = 1e3 * float(np.percentile(joined, 99))
    out |= {"large_answered": len(statuses), "large_statuses": sorted(set(statuses)),
            "binary_statuses": sorted(set(binary_statuses))}
    return out


if __name__ == "__main__":
    import sys

    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 7_000_000)))
