"""A bot scenario: a YAML file, overridden by command-line flags. Every test type is a preset over these fields.

    target: 127.0.0.1:9000        # HOST:PORT of the protocol's port
    protocol: tcp                 # tcp (game protocol) | udp (streams) | http | grpc (KServe v2)
    model: tiny
    test: load                    # load | stress | spike | soak | failover | concurrency
    users: 8                      # closed model: virtual users, each waiting for its answer
    rate: 0                       # open model: requests/s (arrivals on a schedule, latency from intended time)
    stages: [{duration: 10s, rate: 500}, {duration: 10s, rate: 2000}]   # open-model ramp (linear within a stage)
    duration: 10s
    warmup: 1s                    # load before the measured run, not counted (0 for none)
    processes: 1
    thresholds: ["p99<5ms", "error_rate<0.1%"]
    steps: [{command: infer}]     # closed-model loop; also login, ping, think (ms), send_frame
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from twinfer.config.loading import first_error
from twinfer.errors import ConfigError

_DURATION = re.compile(r"\s*([0-9.]+)\s*(ms|s|m|h)?\s*")


def parse_duration(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.fullmatch(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a duration like 500ms, 10s, 2m")
    return float(match[1]) * {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[match[2]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Stage(_Strict):
    duration: float
    rate: float | None = None
    users: int | None = None

    _d = field_validator("duration", mode="before")(parse_duration)


class Step(_Strict):
    command: str
    args: dict[str, Any] = {}


class SpikeSettings(_Strict):
    factor: float = Field(10.0, gt=1)
    at: float = 0.3  # fraction of the duration at which the spike starts
    length: float = 0.2  # fraction of the duration it lasts


class StressSettings(_Strict):
    start_rate: float = Field(100.0, gt=0)
    factor: float = Field(1.5, gt=1)  # each step multiplies the rate
    step: float = 3.0  # seconds per step
    max_rate: float = 1_000_000.0

    _s = field_validator("step", mode="before")(parse_duration)


class FailoverSettings(_Strict):
    command: str = ""  # shell command run at `at` seconds (kill/restart a worker, restart a server...)
    at: float = 2.0

    _a = field_validator("at", mode="before")(parse_duration)


class ConcurrencySettings(_Strict):
    connections: int = Field(200, ge=1)
    duplicate_logins: int = Field(20, ge=0)
    streams: int = Field(20, ge=0)


class Scenario(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    target: str = "127.0.0.1:9000"
    protocol: Literal["tcp", "udp", "http", "grpc"] = "tcp"
    model: str = "tiny"
    test: Literal["load", "stress", "spike", "soak", "failover", "concurrency"] = "load"
    users: int = Field(8, ge=0)
    rate: float = Field(0.0, ge=0)
    stages: list[Stage] = []
    duration: float = 10.0
    # Load sent before the measured run, counted nowhere: connections open, channels and the server's first calls
    # warm up (a gRPC stress run broke `p99<10ms` at its first step on 70 ms first-second latencies without it).
    warmup: float = Field(1.0, ge=0)
    processes: int = Field(1, ge=1, le=64)
    thresholds: list[str] = []
    steps: list[Step] = [Step(command="infer")]
    token: str | None = None
    timeout: float = 10.0
    fps: float = 60.0  # udp: frames per second per user
    frame_size: int = 64  # udp: square GRAY8 frames of this side
    metrics_url: str | None = None  # soak: the server's Prometheus endpoint, sampled for RSS
    sample_every: float = 1.0
    spike: SpikeSettings = SpikeSettings()
    stress: StressSettings = StressSettings()
    failover: FailoverSettings = FailoverSettings()
    concurrency: ConcurrencySettings = ConcurrencySettings()
    json_path: Path | None = Field(None, alias="json")
    report: Path | None = None

    _dur = field_validator("duration", "timeout", "sample_every", "warmup", mode="before")(parse_duration)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.target.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"target {self.target!r}: expected HOST:PORT")
        return host, int(port)

    @property
    def open_model(self) -> bool:
        return self.rate > 0 or any(s.rate for s in self.stages) or self.test in ("stress", "spike")


def load_scenario(path: Path | None, overrides: dict[str, Any]) -> Scenario:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"scenario {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"scenario {path}: expected a mapping")
    for key, value in overrides.items():
        if value is None or value == []:
            continue
        data[key] = value
    if overrides.get("users") is not None and overrides.get("rate") is None:
        data["rate"] = 0  # --users on the command line means a closed-model run
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        _, key, message = first_error(exc)
        raise ConfigError(f"scenario error: {key}: {message}") from None
