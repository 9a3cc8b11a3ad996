"""Prometheus metrics, read from the statistics the batchers already keep, at scrape time.

Nothing is recorded per request for Prometheus: the collector walks the repository's ModelStatistics (and the
session registry) when /metrics is scraped, so metrics cost the hot path nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from twinfer.inference.facade import InferenceFacade

# name, help: the README's metrics table is checked against this list.
METRICS: tuple[tuple[str, str], ...] = (
    ("twinfer_inference_request_success_total", "requests answered successfully, per model and version"),
    ("twinfer_inference_request_failure_total", "requests that failed (timeout, backend error, drain)"),
    ("twinfer_inference_count_total", "rows (batch elements) run by the model"),
    ("twinfer_inference_exec_count_total", "batches executed by the model"),
    ("twinfer_inference_request_duration_seconds_total", "cumulative submit-to-answer time of successful requests"),
    ("twinfer_inference_queue_duration_seconds_total", "cumulative time requests waited in the batcher queue"),
    ("twinfer_inference_compute_duration_seconds_total", "cumulative model execution time, counted per request"),
    ("twinfer_inference_batch_executions_total", "batches executed, by batch size (label batch_size)"),
    ("twinfer_inference_in_flight", "requests queued or running now"),
    ("twinfer_model_ready", "1 when a model has a version serving, else 0"),
    ("twinfer_sessions", "open game-protocol (TCP) sessions"),
    ("twinfer_sessions_logged_in", "game-protocol sessions that have logged in"),
    ("twinfer_http_connections", "open KServe HTTP connections"),
)
HELP = dict(METRICS)


class TwinferCollector:
    def __init__(self, facade: InferenceFacade, gauges: dict[str, Callable[[], float]]) -> None:
        self._facade = facade
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version"]

        def counter(name: str, extra: list[str] | None = None) -> CounterMetricFamily:
            return CounterMetricFamily(name.removesuffix("_total"), HELP[name], labels=labels + (extra or []))

        success = counter("twinfer_inference_request_success_total")
        failure = counter("twinfer_inference_request_failure_total")
        rows = counter("twinfer_inference_count_total")
        execs = counter("twinfer_inference_exec_count_total")
        request_time = counter("twinfer_inference_request_duration_seconds_total")
        queue_time = counter("twinfer_inference_queue_duration_seconds_total")
        compute_time = counter("twinfer_inference_compute_duration_seconds_total")
        batches = counter("twinfer_inference_batch_executions_total", ["batch_size"])
        in_flight = GaugeMetricFamily("twinfer_inference_in_flight", HELP["twinfer_inference_in_flight"], labels=labels)
        ready = GaugeMetricFamily("twinfer_model_ready", HELP["twinfer_model_ready"], labels=["model"])
        for model in self._facade.models():
            ready.add_metric([model.name], 1.0 if model.versions else 0.0)
            for number, version in sorted(model.versions.items()):
                s, key = version.stats, [model.name, str(number)]
                success.add_metric(key, s.success.count)
                failure.add_metric(key, s.failure.count)
                rows.add_metric(key, s.inference_count)
                execs.add_metric(key, s.execution_count)
                request_time.add_metric(key, s.success.ns / 1e9)
                queue_time.add_metric(key, s.queue.ns / 1e9)
                compute_time.add_metric(key, s.compute.ns / 1e9)
                for size, b in sorted(s.batches.items()):
                    batches.add_metric(key + [str(size)], b.count)
                in_flight.add_metric(key, s.in_flight)
        yield from (success, failure, rows, execs, request_time, queue_time, compute_time, batches, in_flight, ready)
        for name, read in self._gauges.items():
            yield GaugeMetricFamily(name, HELP[name], value=read())


def build_registry(facade: InferenceFacade, gauges: dict[str, Callable[[], float]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TwinferCollector(facade, gauges))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> Callable[[], tuple[bytes, bytes]]:
    """A function rendering the registry in Prometheus text format: (body, content type)."""
    return lambda: (generate_latest(registry), CONTENT_TYPE_LATEST.encode())
