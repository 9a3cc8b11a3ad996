"""Prometheus metrics, read from the statistics the batchers already keep, at scrape time.

Nothing is recorded per request for Prometheus: the collector walks the repository's ModelStatistics (and the
session registry) when /metrics is scraped, so metrics cost the hot path nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from twisted.internet.defer import Deferred

from twinfer.gpu_metrics import GPU_METRICS, gpu_collector
from twinfer.inference.custom_metrics import CustomMetricsCollector, bare_counter_names
from twinfer.inference.facade import InferenceFacade
from twinfer.server.worker_peers import WorkerPeers, metric_families_json
from twinfer.streaming.manager import StreamManager
from twinfer.streaming.stats import LATENCY_BUCKETS_S

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
    ("twinfer_gc_frozen_objects", "objects exempt from garbage collection (alive since start-up or a model load: "
                                  "twinfer.gc_policy)"),
    ("twinfer_streams_open", "streams open now"),
    ("twinfer_stream_partial_frame_bytes", "bytes held in partly reassembled stream frames, all streams (capped by "
                                           "max_partial_frame_bytes)"),
    ("twinfer_stream_frames_total", "stream frames by event (in, out, skipped, failed); all streams, closed included"),
    ("twinfer_stream_frames_in_total", "complete authentic frames received, per open stream (label stream)"),
    ("twinfer_stream_frames_out_total", "frames whose results were sent, per open stream"),
    ("twinfer_stream_frames_skipped_total", "frames replaced by a newer one before they ran, per open stream"),
    ("twinfer_stream_datagrams_dropped_total", "stream datagrams dropped, by reason (forged, replayed, malformed, "
                                               "oversized, unknown_stream...; partial frames given up: "
                                               "incomplete, partial_budget, frame_deadline)"),
    ("twinfer_stream_latency_seconds", "frame-in (complete at the server) -> result datagram out, histogram"),
    *GPU_METRICS,  # Triton's nv_gpu_* names, only where NVML works (twinfer.gpu_metrics)
)
HELP = dict(METRICS)


class TwinferCollector:
    def __init__(self, facade: InferenceFacade, gauges: dict[str, Callable[[], float]],
                 streams: StreamManager | None = None) -> None:
        self._facade = facade
        self._gauges = gauges
        self._streams = streams

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
        if self._streams is not None:
            yield from self._stream_metrics(self._streams)

    def _stream_metrics(self, manager: StreamManager) -> Iterator[Metric]:
        streams = list(manager.streams.values())
        yield GaugeMetricFamily("twinfer_streams_open", HELP["twinfer_streams_open"], value=len(streams))
        yield GaugeMetricFamily("twinfer_stream_partial_frame_bytes", HELP["twinfer_stream_partial_frame_bytes"],
                                value=manager.budget.held)
        totals = dict(manager.closed_stats)
        dropped = dict(manager.dropped)
        per_stream = {name: CounterMetricFamily(name.removesuffix("_total"), HELP[name], labels=["stream"]) for name in
                      ("twinfer_stream_frames_in_total", "twinfer_stream_frames_out_total",
                       "twinfer_stream_frames_skipped_total")}
        buckets = list(manager.closed_latency.counts)
        latency_sum = manager.closed_latency.total_s
        for stream in streams:
            s, label = stream.stats, [str(stream.id)]
            for key, value in (("frames_in", s.frames_in), ("frames_out", s.frames_out),
                               ("frames_skipped", s.frames_skipped), ("frames_failed", s.frames_failed)):
                totals[key] = totals.get(key, 0) + value
            per_stream["twinfer_stream_frames_in_total"].add_metric(label, s.frames_in)
            per_stream["twinfer_stream_frames_out_total"].add_metric(label, s.frames_out)
            per_stream["twinfer_stream_frames_skipped_total"].add_metric(label, s.frames_skipped)
            for reason, count in s.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + count
            buckets = [a + b for a, b in zip(buckets, s.latency.counts)]
            latency_sum += s.latency.total_s
        frames = CounterMetricFamily("twinfer_stream_frames", HELP["twinfer_stream_frames_total"], labels=["event"])
        for key in ("frames_in", "frames_out", "frames_skipped", "frames_failed"):
            frames.add_metric([key.removeprefix("frames_")], totals.get(key, 0))
        drops = CounterMetricFamily("twinfer_stream_datagrams_dropped", HELP["twinfer_stream_datagrams_dropped_total"],
                                    labels=["reason"])
        for reason, count in sorted(dropped.items()):
            drops.add_metric([reason], count)
        cumulative, running = [], 0
        for bound, count in zip([*map(str, LATENCY_BUCKETS_S), "+Inf"], buckets):
            running += count
            cumulative.append((bound, running))
        latency = HistogramMetricFamily("twinfer_stream_latency_seconds", HELP["twinfer_stream_latency_seconds"],
                                        buckets=cumulative, sum_value=latency_sum)
        yield from (frames, *per_stream.values(), drops, latency)


def build_registry(facade: InferenceFacade, gauges: dict[str, Callable[[], float]],
                   streams: StreamManager | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TwinferCollector(facade, gauges, streams))
    registry.register(CustomMetricsCollector())  # python models' pb_utils.MetricFamily
    gpus = gpu_collector()
    if gpus is not None:
        registry.register(gpus)
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)  # python_gc_collections_total by generation: how often a collection ran
    PlatformCollector(registry=registry)
    return registry


def render(collector: Any) -> bytes:
    """Prometheus text format. prometheus_client's writer names every counter family `<name>_total` in its HELP
    and TYPE lines; the python models' counters keep their bare names, as Triton exports them (their samples
    already have them), so those two lines are put back for each."""
    body = b"\n" + generate_latest(collector)  # every HELP line now follows a newline, the first one too
    for name in bare_counter_names():
        body = body.replace(f"\n# HELP {name}_total ".encode(), f"\n# HELP {name} ".encode(), 1).replace(
            f"\n# TYPE {name}_total counter\n".encode(), f"\n# TYPE {name} counter\n".encode(), 1)
    return body[1:]


def exposition(registry: CollectorRegistry) -> Callable[[], tuple[bytes, bytes]]:
    """A function rendering the registry in Prometheus text format: (body, content type)."""
    return lambda: (render(registry), CONTENT_TYPE_LATEST.encode())


class _Families:
    """A ready list of families, in the shape generate_latest reads (a registry's `collect`)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class GroupExposition:
    """/metrics under `--workers N`: this worker's families and its siblings', every sample labelled `worker`
    (twinfer.server.worker_peers says why a label and not sums)."""

    def __init__(self, registry: CollectorRegistry, peers: WorkerPeers) -> None:
        self._registry = registry
        self._peers = peers

    def __call__(self) -> Deferred[tuple[bytes, bytes]]:
        own = metric_families_json(self._registry.collect())
        return self._peers.ask_all("metrics").addCallback(self._render, own)

    def _render(self, answers: list[tuple[int, Any]], own: list[list[Any]]) -> tuple[bytes, bytes]:
        families: dict[str, Metric] = {}
        for index, payload in sorted([(self._peers.index, own), *answers], key=lambda a: a[0]):
            worker = str(index)
            for name, documentation, kind, unit, samples in payload:
                family = families.get(name)
                if family is None:
                    family = families[name] = Metric(name, documentation, kind, unit)
                elif family.type != kind:
                    continue  # cannot happen between workers of one version; never mix types in one family
                for sample_name, labels, value in samples:
                    family.add_sample(sample_name, {**labels, "worker": worker}, float(value))
        return render(_Families(list(families.values()))), CONTENT_TYPE_LATEST.encode()
