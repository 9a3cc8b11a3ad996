"""The dynamic batcher on a fake clock with an executor the test fires by hand: exact, no threads, no sleeps."""

from __future__ import annotations

import numpy as np
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from twinfer.errors import InferenceFailed, Overloaded, RequestTimeout, Unavailable
from twinfer.inference.batcher import DynamicBatcher
from twinfer.inference.model_config import DynamicBatchingConfig, ModelConfig, TensorConfig
from twinfer.inference.statistics import ModelStatistics


def make_config(**overrides) -> ModelConfig:
    fields = dict(
        name="m",
        max_batch_size=8,
        inputs=(TensorConfig(name="x", datatype="FP32", dims=(2,)),),
        outputs=(TensorConfig(name="y", datatype="FP32", dims=(2,)),),
        dynamic_batching=DynamicBatchingConfig(),
        instance_count=1,
    )
    fields.update(overrides)
    return ModelConfig(**fields)


class ManualExecutor:
    """Records batches; the test completes them. Output y = 2 * x so splitting is checkable."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, np.ndarray], Deferred]] = []

    def __call__(self, inputs, outputs):
        d: Deferred = Deferred()
        self.calls.append((inputs, d))
        return d

    def complete(self, index: int = 0, compute_ns: int = 1000) -> None:
        inputs, d = self.calls.pop(index)
        d.callback(({"y": inputs["x"] * 2}, compute_ns))

    def fail(self, index: int = 0) -> None:
        _, d = self.calls.pop(index)
        d.errback(RuntimeError("boom"))


def rows(n: int, start: float = 0.0) -> dict[str, np.ndarray]:
    return {"x": (np.arange(n * 2, dtype=np.float32).reshape(n, 2) + start)}


def results(d: Deferred) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


@pytest.fixture
def setup():
    clock = Clock()
    executor = ManualExecutor()
    stats = ModelStatistics()
    return clock, executor, stats


def test_idle_instance_runs_a_single_request_at_once(setup):
    clock, executor, stats = setup
    batcher = DynamicBatcher(clock, make_config(), executor, stats)
    got = results(batcher.submit(rows(1), ["y"]))
    assert len(executor.calls) == 1
    executor.complete()
    np.testing.assert_array_equal(got[0]["y"], rows(1)["x"] * 2)
    assert stats.success.count == 1 and stats.batches[1].count == 1


def test_requests_queued_while_busy_leave_as_one_batch_and_split_back(setup):
    clock, executor, stats = setup
    batcher = DynamicBatcher(clock, make_config(), executor, stats)
    first = results(batcher.submit(rows(1), ["y"]))
    queued = [results(batcher.submit(rows(n, start=100 * n), ["y"])) for n in (1, 2, 3)]
    assert len(executor.calls) == 1 and batcher.queued == 3
    executor.complete()
    assert first and len(executor.calls) == 1
    batch_inputs, _ = executor.calls[0]
    assert batch_inputs["x"].shape == (6, 2)
    executor.complete()
    for n, got in zip((1, 2, 3), queued):
        np.testing.assert_array_equal(got[0]["y"], rows(n, start=100 * n)["x"] * 2)
    assert stats.batches == {1: stats.batches[1], 6: stats.batches[6]}
    assert stats.inference_count == 7 and stats.execution_count == 2 and stats.success.count == 4


def test_batch_never_exceeds_max_batch_size(setup):
    clock, executor, stats = setup
    batcher = DynamicBatcher(clock, make_config(max_batch_size=4), executor, stats)
    batcher.submit(rows(1), ["y"])
    for _ in range(5):
        batcher.submit(rows(2), ["y"])
    executor.complete()
    assert executor.calls[0][0]["x"].shape[0] == 4
    executor.complete()
    assert executor.calls[0][0]["x"].shape[0] == 4
    executor.complete()
    assert executor.calls[0][0]["x"].shape[0] == 2


def test_different_shapes_never_share_a_batch(setup):
    clock, executor, stats = setup
    config = make_config(inputs=(TensorConfig(name="x", datatype="FP32", dims=(-1,)),),
                         outputs=(TensorConfig(name="y", datatype="FP32", dims=(-1,)),))
    batcher = DynamicBatcher(clock, config, executor, stats)
    batcher.submit(rows(1), ["y"])
    batcher.submit(rows(1), ["y"])
    batcher.submit({"x": np.zeros((1, 3), np.float32)}, ["y"])
    batcher.submit(rows(1), ["y"])
    executor.complete()
    assert executor.calls[0][0]["x"].shape == (2, 2)  # the head's shape, skipping the odd one out
    executor.complete()
    assert executor.calls[0][0]["x"].shape == (1, 3)


def test_queue_delay_waits_for_a_preferred_size_then_gives_up(setup):
    clock, executor, stats = setup
    policy = DynamicBatchingConfig(max_queue_delay_us=1000, preferred_batch_sizes=(4,))
    batcher = DynamicBatcher(clock, make_config(dynamic_batching=policy), executor, stats)
    batcher.submit(rows(1), ["y"])
    batcher.submit(rows(1), ["y"])
    assert executor.calls == []
    clock.advance(0.0005)
    assert executor.calls == []
    clock.advance(0.0006)
    assert executor.calls[0][0]["x"].shape[0] == 2


def test_queue_delay_leaves_early_when_the_preferred_size_is_reached(setup):
    clock, executor, stats = setup
    policy = DynamicBatchingConfig(max_queue_delay_us=100_000, preferred_batch_sizes=(4,))
    batcher = DynamicBatcher(clock, make_config(dynamic_batching=policy), executor, stats)
    for _ in range(4):
        batcher.submit(rows(1), ["y"])
    assert executor.calls[0][0]["x"].shape[0] == 4


def test_a_long_queue_leaves_in_the_largest_preferred_batch_and_the_rest_keeps_the_instance_busy(setup):
    # Triton's rule. Taking all 6 queued rows would return every request of a closed-loop client at once and leave
    # the instance idle while they all come back.
    clock, executor, stats = setup
    policy = DynamicBatchingConfig(preferred_batch_sizes=(2, 4))
    batcher = DynamicBatcher(clock, make_config(dynamic_batching=policy), executor, stats)
    batcher.submit(rows(1), ["y"])
    queued = [results(batcher.submit(rows(1, start=10 * i), ["y"])) for i in range(6)]
    executor.complete()
    assert executor.calls[0][0]["x"].shape[0] == 4 and batcher.queued == 2
    executor.complete()
    assert executor.calls[0][0]["x"].shape[0] == 2 and batcher.queued == 0
    executor.complete()
    for i, got in enumerate(queued):
        np.testing.assert_array_equal(got[0]["y"], rows(1, start=10 * i)["x"] * 2)


def test_a_queue_past_the_largest_preferred_size_never_waits_for_the_delay(setup):
    # 2 + 3 rows queued: the largest preferred batch formable is 2, but 5 rows were waiting, more than the target 4,
    # so that batch leaves at once instead of holding out for the delay.
    clock, executor, stats = setup
    policy = DynamicBatchingConfig(max_queue_delay_us=100_000, preferred_batch_sizes=(2, 4))
    batcher = DynamicBatcher(clock, make_config(dynamic_batching=policy), executor, stats)
    batcher.submit(rows(4), ["y"])  # the target size: runs at once and keeps the instance busy
    batcher.submit(rows(2), ["y"])
    batcher.submit(rows(3), ["y"])
    executor.complete()
    assert executor.calls[0][0]["x"].shape[0] == 2 and batcher.queued == 1


def test_when_no_preferred_size_can_be_formed_the_largest_batch_leaves(setup):
    clock, executor, stats = setup
    policy = DynamicBatchingConfig(preferred_batch_sizes=(4,))
    batcher = DynamicBatcher(clock, make_config(dynamic_batching=policy), executor, stats)
    batcher.submit(rows(1), ["y"])
    for _ in range(3):
        batcher.submit(rows(3), ["y"])  # 3, 6, 9 rows: never exactly 4; max_batch_size 8 caps it at 6
    executor.complete()
    assert executor.calls[0][0]["x"].shape[0] == 6 and batcher.queued == 1


def test_full_queue_is_overloaded(setup):
    clock, executor, stats = setup
    policy = DynamicBatchingConfig(max_queue_size=2)
    batcher = DynamicBatcher(clock, make_config(dynamic_batching=policy), executor, stats)
    batcher.submit(rows(1), ["y"])  # running
    batcher.submit(rows(1), ["y"])
    batcher.submit(rows(1), ["y"])
    with pytest.raises(Overloaded):
        batcher.submit(rows(1), ["y"])


def test_timeout_fails_a_queued_request_but_not_a_running_one(setup):
    clock, executor, stats = setup
    batcher = DynamicBatcher(clock, make_config(), executor, stats)
    running = results(batcher.submit(rows(1), ["y"], timeout_s=0.01))
    waiting = results(batcher.submit(rows(1), ["y"], timeout_s=0.01))
    clock.advance(0.02)
    assert waiting and waiting[0].check(RequestTimeout)
    assert not running
    executor.complete()
    assert isinstance(running[0], dict)
    assert stats.failure.count == 1 and stats.success.count == 1
    assert executor.calls == []


def test_instances_run_batches_in_parallel(setup):
    clock, executor, stats = setup
    batcher = DynamicBatcher(clock, make_config(instance_count=3), executor, stats)
    for _ in range(5):
        batcher.submit(rows(1), ["y"])
    assert len(executor.calls) == 3 and batcher.busy == 3 and batcher.queued == 2


def test_without_dynamic_batching_each_request_runs_alone(setup):
    clock, executor, stats = setup
    batcher = DynamicBatcher(clock, make_config(dynamic_batching=None), executor, stats)
    for _ in range(3):
        batcher.submit(rows(1), ["y"])
    executor.complete()
    assert executor.calls[0][0]["x"].shape[0] == 1


def test_backend_failure_fails_every_request_of_the_batch_with_a_typed_error(setup):
    clock, executor, stats = setup
    batcher = DynamicBatcher(clock, make_config(), executor, stats)
    batcher.submit(rows(1), ["y"])
    a = results(batcher.submit(rows(1), ["y"]))
    b = results(batcher.submit(rows(1), ["y"]))
    executor.complete()
    executor.fail()
    assert a[0].check(InferenceFailed) and b[0].check(InferenceFailed)
    assert stats.failure.count == 2


def test_drain_finishes_queued_work_then_refuses_new_requests(setup):
    clock, executor, stats = setup
    batcher = DynamicBatcher(clock, make_config(), executor, stats)
    a = results(batcher.submit(rows(1), ["y"]))
    b = results(batcher.submit(rows(1), ["y"]))
    drained = results(batcher.drained())
    with pytest.raises(Unavailable):
        batcher.submit(rows(1), ["y"])
    executor.complete()
    assert a and not drained
    executor.complete()
    assert b and drained == [None]
    assert stats.in_flight == 0


def test_a_late_timer_makes_the_next_hold_start_that_much_earlier_capped_at_three_quarters_of_the_delay(setup):
    """Event-loop timers fire late (whole milliseconds); the batcher measures by how much and sets its next
    queue-delay timer that much earlier, so held batches leave at max_queue_delay, not after it."""
    clock, executor, stats = setup
    policy = DynamicBatchingConfig(max_queue_delay_us=2000)
    batcher = DynamicBatcher(clock, make_config(dynamic_batching=policy), executor, stats)
    batcher.submit(rows(1), ["y"])
    (timer,) = clock.getDelayedCalls()
    assert timer.getTime() == pytest.approx(0.002)
    clock.advance(0.0025)  # fires 0.5 ms late
    executor.complete()
    batcher.submit(rows(1), ["y"])
    (timer,) = clock.getDelayedCalls()
    assert timer.getTime() - clock.seconds() == pytest.approx(0.0015)  # 0.5 ms early
    clock.advance(0.0035)  # 2 ms late now: the correction stops at three quarters of the delay
    executor.complete()
    batcher.submit(rows(1), ["y"])
    (timer,) = clock.getDelayedCalls()
    assert timer.getTime() - clock.seconds() == pytest.approx(0.0005)


def test_the_queue_delay_timer_is_the_one_the_batcher_is_given(setup):
    """The server hands the batcher inference.precise_timer's call_later (sub-millisecond)."""
    clock, executor, stats = setup
    asked: list[float] = []

    def call_later(delay_s, fn):
        asked.append(delay_s)
        return clock.callLater(delay_s, fn)

    policy = DynamicBatchingConfig(max_queue_delay_us=500)
    batcher = DynamicBatcher(clock, make_config(dynamic_batching=policy), executor, stats, None, call_later)
    batcher.submit(rows(1), ["y"])
    assert asked == [pytest.approx(0.0005)]
    clock.advance(0.0005)
    assert executor.calls[0][0]["x"].shape[0] == 1
