"""The benchmark harness's pure parts: parsing perf_analyzer and wrk output, ratios and targets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.loads import Result, kserve_body, parse_perf_analyzer_csv, parse_wrk, triton_body
from bench.report import Target, markdown, targets

PA_CSV = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,\
Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,\
Avg latency,request/response,response wait
8,6090.5,10,900,20,5,30,5,3,1260,1500,1700,2030,1300,0,0
"""

WRK = """Running 3s test @ http://127.0.0.1:8000/v2/models/tiny/infer
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.01ms  300.00us   9.00ms   75.50%
    Req/Sec     8.20k   300.00    9.00k    68.99%
  Latency Distribution
     50%  940.00us
     75%    1.10ms
     90%    1.50ms
     99%    3.15ms
  24438 requests in 3.00s, 4.50MB read
  Non-2xx or 3xx responses: 12
Requests/sec:   8146.21
"""


def test_perf_analyzer_csv_gives_rate_and_latencies_in_ms():
    assert parse_perf_analyzer_csv(PA_CSV) == (6090.5, 1.26, 2.03)
    with pytest.raises(ValueError):
        parse_perf_analyzer_csv(PA_CSV.splitlines()[0] + "\n")


def test_wrk_output_gives_rate_latencies_and_errors():
    assert parse_wrk(WRK) == pytest.approx((8146.21, 0.94, 3.15, 12))
    assert parse_wrk(WRK.replace("  Non-2xx or 3xx responses: 12\n", ""))[3] == 0


def test_bodies_are_the_peers_body_and_triton_asks_for_a_binary_output():
    assert kserve_body().startswith('{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"FP32","data":[')
    assert '"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}}]' in triton_body()


def _run(results, raw=None, extra=None):
    return SimpleNamespace(results=results, raw=raw or {}, extra=extra or {})


def test_targets_compare_like_with_like_and_say_by_how_much_they_miss():
    results = [
        Result("twinfer", "http", "perf_analyzer", 8, 9000, 1, 2), Result("triton", "http", "perf_analyzer", 8, 6000, 1, 2),
        Result("twinfer", "grpc", "perf_analyzer", 8, 3000, 1, 2), Result("triton", "grpc", "perf_analyzer", 8, 5000, 1, 2),
        Result("twinfer", "http", "wrk", 8, 10000, 1, 2), Result("mlserver", "http", "wrk", 8, 2000, 1, 2),
        Result("twinfer", "tcp", "tcp_tiny", 128, 24000, 1, 2),
        Result("twinfer", "http", "perf_analyzer", 4, 400, 1, 2, batch=8),
    ]
    extra = {"streams": {"results_per_s": 1800, "raw_frames_per_s": 4000, "streams": 30},
             "idle": {"bytes_per_session": 3300, "sessions": 10000}}
    goals = {t.name: t for t in targets(_run(results, {"face_b8": 500}, extra))}
    assert goals["KServe HTTP tiny c=8 vs Triton"].value == 1.5 and goals["KServe HTTP tiny c=8 vs Triton"].met
    grpc = goals["KServe GRPC tiny c=8 vs Triton"]
    assert grpc.value == 0.6 and grpc.verdict() == "missed by 2.50x"
    assert goals["KServe HTTP tiny c=8 vs MLServer"].value == 5.0
    assert goals["KServe GRPC tiny c=8 vs MLServer"].verdict() == "not measured"
    assert goals["Game protocol TCP pipelined vs Triton HTTP"].value == 4.0
    assert goals["Face CNN batch 8 served vs raw ORT batch 8"].value == pytest.approx(3200 / 4000)
    assert goals["Streams at p99 < 16.7 ms vs raw compute limit"].value == 0.45
    idle = goals["RSS per idle session (KB), 10k sessions, one worker"]
    assert idle.value == 3.3 and idle.met


def test_a_lower_is_better_target_reports_the_factor_over_the_ceiling():
    assert Target("rss", 20.0, 30.0, "x", lower_is_better=True).verdict() == "missed by 1.50x"


def test_markdown_lists_results_ratios_and_failures():
    results = [Result("onnxruntime", "-", "in-process", 1, 100000, 0.01, 0.02),
               Result("twinfer", "http", "wrk", 8, 8000, 1, 2, cpu_s_per_1k=0.15),
               Result("triton", "http", "wrk", 8, 4000, 1, 2)]
    text = markdown({"date": "2026-11-24T00:00:00+00:00"}, results, {"tiny_b1": 100000}, {},
                    [{"what": "litserve", "error": "did not start"}], [])
    row = next(line for line in text.splitlines() if line.startswith("| twinfer | http | wrk"))
    assert "| 0.0800 | 2.00 |" in row and "0.150" in row
    assert "**litserve**" in text and "did not start" in text


def test_markdown_shows_the_streams_steps_with_and_without_the_server_cpu_column():
    """bench/streams.py's steps gained a fifth value (server CPU ms a frame); the report took four and the
    harness's streams suite failed on the first run with it."""
    streams = {"streams": 23, "results_per_s": 1380.0, "p99_ms": 8.75, "raw_frames_per_s": 4950.0, "raw_batch": 16,
               "sender_processes": 2, "steps": [[16, 5.51, 960.0, 1.0, 1.108], [24, 36.1, 1423.8, 0.989]]}
    text = markdown({"date": "2026-12-01T00:00:00+00:00"}, [], {}, {"streams": streams}, [], [])
    assert "| 16 | 5.51 | 960 | 100.0 % | 1.108 |" in text
    assert "| 24 | 36.10 | 1,424 | 98.9 % | - |" in text
    assert "2 sender process(es)" in text


def test_loads_alternate_between_systems_each_round_and_report_the_median_round(tmp_path):
    import os

    from bench.__main__ import Cell, Run, measure_interleaved
    from bench.peers import Running

    run = Run(quick=False, work=tmp_path, rounds=3)
    order: list[str] = []
    rates = {"a": iter([100.0, 300.0, 200.0]), "b": iter([50.0, 40.0, 60.0]), "c1": iter([7.0])}

    def call(system: str):
        def measure() -> tuple:
            order.append(system)
            return next(rates[system]), 1.0, 2.0
        return measure

    me = Running("x", os.getpid())
    cells = [Cell("a", me, "http", "wrk", 8, call("a")), Cell("b", me, "http", "wrk", 8, call("b")),
             Cell("c1", me, "http", "wrk", 1, call("c1"))]
    measure_interleaved(run, cells)
    # round 1 runs every load; rounds 2 and 3 only the c=8 (target) load, the first system rotating
    assert order == ["a", "b", "c1", "b", "a", "a", "b"]
    reported = {r.system: r for r in run.results}
    assert reported["a"].infer_per_s == 200.0 and reported["a"].samples == [100.0, 300.0, 200.0]
    assert "median of 3 interleaved rounds (100-300 infer/s)" in reported["a"].note
    assert reported["b"].infer_per_s == 50.0 and reported["c1"].infer_per_s == 7.0 and not reported["c1"].samples
