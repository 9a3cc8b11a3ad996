"""Matching received VMC frames to the frames sent before them, and the per-shape correlation."""

from __future__ import annotations

import json
import math

from twinfer.streaming.tracking_check import Sent, correlations, format_report, read_sent


def test_each_received_frame_is_compared_with_the_last_frame_sent_before_it():
    sent = [Sent(t=float(i), values={"jawOpen": i / 10, "flat": 0.5}) for i in range(10)]
    # Received 0.3 s after each send, values following jawOpen exactly: r = 1.
    received = [(i + 0.3, {"jawOpen": i / 10, "flat": 0.5, "extra": 1.0}) for i in range(10)]
    result = correlations(sent, received)
    assert set(result) == {"jawOpen", "flat"}  # only shapes both sides have
    r, n = result["jawOpen"]
    assert math.isclose(r, 1.0) and n == 10
    assert math.isnan(result["flat"][0])  # nothing varied: no correlation to speak of


def test_frames_arriving_before_anything_was_sent_are_ignored_and_lag_lowers_r():
    sent = [Sent(t=float(i), values={"a": math.sin(i / 2)}) for i in range(40)]
    on_time = [(i + 0.1, {"a": math.sin(i / 2)}) for i in range(40)]
    late = [(i + 0.1, {"a": math.sin((i - 3) / 2)}) for i in range(40)]  # the receiver shows a stale value
    early = [(-5.0, {"a": 1.0})]
    assert correlations(sent, early + on_time)["a"][1] == 40
    assert correlations(sent, on_time)["a"][0] > 0.999
    assert correlations(sent, late)["a"][0] < 0.7


def test_read_sent_skips_frames_without_driving_values(tmp_path):
    path = tmp_path / "sent.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"seq": 0, "t": 1.0, "values": {"a": 0.1}}, {"seq": 1, "t": 2.0, "values": None},
        {"seq": 2, "t": 3.0, "values": {"a": 0.3}}]) + "\n")
    assert read_sent(path) == [Sent(1.0, {"a": 0.1}), Sent(3.0, {"a": 0.3})]


def test_report_lists_the_best_first():
    text = format_report({"a": (0.5, 10), "b": (0.9, 10), "c": (float("nan"), 3)})
    assert [line.split()[0] for line in text.splitlines()[1:]] == ["b", "a", "c"]
