"""What goes into and comes out of the inference facade, independent of any wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from twinfer.inference.response_stream import ResponseStream


@dataclass(slots=True)
class InferenceRequest:
    """One request as every front-end hands it to the facade."""

    model: str
    inputs: dict[str, np.ndarray]
    version: str | None = None  # None = the newest ready version
    outputs: list[str] | None = None  # None = every output
    timeout_ms: int | None = None  # None = the model's default
    parameters: dict | None = None  # the client's parameters for the model (twinfer.kserve.parameters)


@dataclass(slots=True)
class InferenceResult:
    """A model's answer: its outputs, or for a decoupled model (streaming calls only) the stream its responses
    arrive on (`outputs` then stays empty)."""

    model: str
    version: str
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    stream: ResponseStream | None = None
    parameters: dict | None = None  # the model's response parameters (python models)


class Outputs(dict):
    """A backend's outputs of one request, with the response parameters a python model set (a dict, so every
    consumer of plain outputs is unchanged)."""

    __slots__ = ("parameters",)

    def __init__(self, outputs: dict[str, np.ndarray], parameters: dict | None = None) -> None:
        super().__init__(outputs)
        self.parameters = parameters
