"""#18 item 7: aggregate stream series only grow. `twinfer_stream_latency_seconds` lost a stream's counts when the
stream closed, which Prometheus reads as a counter reset (rate() and histogram_quantile() go wrong)."""

from __future__ import annotations

from tests.unit.test_stream_limits import facade, manager, request  # noqa: F401 - the module's fixture and helpers
from twinfer.metrics import build_registry


def test_the_latency_histogram_keeps_a_closed_stream_s_counts(facade):  # noqa: F811
    m = manager(facade, max_streams_per_session=4)
    registry = build_registry(facade, {}, m)
    owner = object()
    first, second = (m.open(owner, request(), "127.0.0.1") for _ in range(2))
    for seconds in (0.0005, 0.003, 0.2):
        first.stats.latency.observe(seconds)
    second.stats.latency.observe(0.003)
    first.stats.frames_in = 3

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels)

    before = (sample("twinfer_stream_latency_seconds_count"), sample("twinfer_stream_latency_seconds_sum"),
              sample("twinfer_stream_latency_seconds_bucket", le="0.004"))
    assert before[0] == 4 and before[2] == 3
    m.close(first.id)
    after = (sample("twinfer_stream_latency_seconds_count"), sample("twinfer_stream_latency_seconds_sum"),
             sample("twinfer_stream_latency_seconds_bucket", le="0.004"))
    assert after == before
    assert sample("twinfer_stream_frames_total", event="in") == 3
    second.stats.latency.observe(0.001)
    m.close(second.id)
    assert sample("twinfer_stream_latency_seconds_count") == 5
    assert sample("twinfer_stream_latency_seconds_bucket", le="+Inf") == 5
