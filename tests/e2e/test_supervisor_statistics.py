"""`--workers 2`: statistics (KServe HTTP and gRPC) and /metrics speak for every worker, whichever one a call lands
on. Before, each call reported the counters of the one worker SO_REUSEPORT handed it to: perf_analyzer read about
half the inferences it had sent, and Prometheus saw counters jump back and forth."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families

from tests.support import make_repository
from twinfer.client import Client

pytestmark = pytest.mark.e2e


def success_count(stats: dict) -> int:
    [tiny] = stats["model_stats"]
    return int(tiny["inference_stats"]["success"]["count"])


def metric_samples(metrics_port: int) -> list:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def test_statistics_and_metrics_count_every_workers_requests(tmp_path, server_factory):
    server = server_factory(make_repository(tmp_path / "repo"), "--insecure-dev", "--workers", "2")
    sent, workers_seen = 0, set()
    for i in range(30):  # one connection each: the kernel spreads them over both workers
        with Client("127.0.0.1", server.tcp) as client:
            workers_seen.add(client.login(f"user{i}").session_id.split("-")[0])
            client.infer("tiny", {"INPUT0": np.full((1, 16), i, np.float32)})
            sent += 1
    assert workers_seen == {"w0", "w1"}

    for _ in range(8):  # new connections again, so both workers answer some of these calls
        http = httpclient.InferenceServerClient(server.http)
        assert success_count(http.get_inference_statistics("tiny")) == sent
        http.close()
        grpc = grpcclient.InferenceServerClient(server.grpc)
        assert success_count(grpc.get_inference_statistics("tiny", as_json=True)) == sent
        grpc.close()
    everything = httpclient.InferenceServerClient(server.http).get_inference_statistics()
    assert sum(int(m["inference_stats"]["success"]["count"]) for m in everything["model_stats"]) == sent

    for _ in range(4):
        samples = metric_samples(server.ports["metrics"])
        per_worker = {s.labels["worker"]: s.value for s in samples
                      if s.name == "twinfer_inference_request_success_total" and s.labels["model"] == "tiny"}
        assert set(per_worker) == {"0", "1"} and all(v > 0 for v in per_worker.values())
        assert sum(per_worker.values()) == sent
        sessions = [s for s in samples if s.name == "twinfer_sessions"]
        assert {s.labels["worker"] for s in sessions} == {"0", "1"}
        assert {s.labels.get("worker") for s in samples if s.name == "process_resident_memory_bytes"} == {"0", "1"}
    assert server.stop() == 0
