"""Open-model arrival schedules: the intended send time of every request, computed from a rate that may change
over time (stages ramp linearly). Latency is measured from these times, so a slow server cannot hide its queue
by slowing the load down (no coordinated omission)."""

from __future__ import annotations

from collections.abc import Callable

RateFn = Callable[[float], float]  # seconds since start -> requests/s


def constant(rate: float) -> RateFn:
    return lambda t: rate


def staged(stages: list[tuple[float, float]], start_rate: float = 0.0) -> RateFn:
    """Linear ramps: each (duration, rate) stage goes from the previous rate to its own over its duration."""

    def rate_at(t: float) -> float:
        begin, previous = 0.0, start_rate
        for duration, rate in stages:
            if t < begin + duration:
                return previous + (rate - previous) * (t - begin) / duration if duration > 0 else rate
            begin, previous = begin + duration, rate
        return previous

    return rate_at


def spike(base: float, factor: float, at: float, length: float) -> RateFn:
    return lambda t: base * factor if at <= t < at + length else base


def steps(start: float, factor: float, step: float, max_rate: float) -> RateFn:
    """Stress: the rate multiplies by `factor` every `step` seconds."""
    return lambda t: min(start * factor ** int(t / step), max_rate)


def arrivals(rate_fn: RateFn, duration: float, share: float = 1.0, phase: float = 1.0, max_step: float = 0.01):
    """Intended send times in (0, duration): the integral of the rate crosses 1, 2, 3... Exact for a constant
    rate; a changing rate is followed in steps of at most `max_step` seconds. Worker k of N runs share 1/N with
    phase (k+1)/N, so the N schedules interleave instead of colliding."""
    t, credit = 0.0, 1.0 - phase
    while t < duration:
        rate = rate_fn(t) * share
        need = 1.0 - credit
        if rate > 0 and need / rate <= max_step:
            t += need / rate
            credit = 0.0
            if t < duration:
                yield t
        else:
            credit += rate * max_step
            t += max_step
