"""#18 item 8: the bot's HTML report next to Gatling's or k6's: latency percentiles over time, an HDR percentile
plot to 99.99 %, scheduled vs achieved rate, users and requests in flight, errors by kind over time, and for
stress a per-step table and a throughput-vs-latency chart; axes with ticks and units, no exponent labels, no raw
JSON dumps."""

from __future__ import annotations

import re

from twinfer.bot.analysis import summarize
from twinfer.bot.charts import nice_ticks, plain, tick_labels
from twinfer.bot.recorder import Merged, Recorder
from twinfer.bot.report import write_html
from twinfer.bot.scenario import Scenario


def stress_summary() -> dict:
    recorder = Recorder(start=0.0)
    for second in range(6):
        rate = 100 * 2**second
        for i in range(rate):
            latency = 0.002 * (1 + second) * (1 + i % 10) + (0.5 if i == 0 and second == 5 else 0.0)
            recorder.success(second + i / rate + latency, latency)
            recorder.scheduled_at[second] += 1
        if second >= 4:
            recorder.error(second + 0.5, "timeout")
            recorder.error(second + 0.6, "connection refused")
        recorder.sample(second + 0.5, 0, second * 3)
    recorder.scheduled = sum(recorder.scheduled_at.values())
    recorder.sent = recorder.scheduled
    merged = Merged()
    merged.add(recorder.to_dict())
    scenario = Scenario(test="stress", duration=6, thresholds=["p99<40ms"],
                        stress={"start_rate": 100, "factor": 2, "step": 1})
    return summarize(scenario, merged, [], {})


def test_the_report_has_the_charts_and_tables_users_expect(tmp_path):
    summary = stress_summary()
    assert summary["timeline"][1]["p90_ms"] > 0 and summary["timeline"][4]["errors"] == {
        "timeout": 1, "connection refused": 1}
    assert summary["percentile_distribution"][-2][0] == 99.99
    write_html(summary, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    for title in ("Latency percentiles over time", "Latency by percentile (HDR)", "Scheduled vs achieved rate",
                  "Active users and requests in flight", "Errors by kind over time", "Stress steps",
                  "Throughput vs latency (the knee)"):
        assert title in page, title
    for label in ("99.99 %", "99.9 %", "latency (ms)", "time since the start (s)", "requests per second",
                  "p50", "p90", "p99", "max", "scheduled/s", "achieved ok/s", "timeout", "connection refused"):
        assert label in page, label
    assert "<pre>" not in page and not re.search(r"\d\.?\d*e[+-]\d", page)  # no JSON dumps, no 5.2e+03 labels
    assert page.count("<svg") == 6 and "http://" not in page and "https://" not in page
    assert page.count("<text") > 60  # ticks on every axis


def test_tick_labels_are_plain_numbers():
    assert plain(5200) == "5,200" and plain(12.5) == "12.5" and plain(0.25) == "0.25"
    assert nice_ticks(0, 5200) == [0, 2000, 4000, 6000] and tick_labels([0, 2000, 4000]) == ["0", "2,000", "4,000"]
    assert tick_labels([99.4, 99.6, 99.8, 100.0]) == ["99.4", "99.6", "99.8", "100.0"]
    assert tick_labels([0, 500, 1000]) == ["0", "500", "1,000"]
