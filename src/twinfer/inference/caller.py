"""How a model reaches the other models of its repository: python models (Triton's BLS calls) and ensembles.

Both go through the facade, like any front-end, so their calls are validated, batched with the other traffic of
the called model, time out and count in its statistics. The repository hands one ModelCaller to the backends it
loads; the facade binds it (`ModelRepository.attach_caller`) because the facade is built on the repository.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from twinfer.inference.types import InferenceRequest, InferenceResult


@dataclass(frozen=True, slots=True)
class ModelCaller:
    """`infer` runs on the reactor thread and returns a Deferred; `reactor` is where to call it from other
    threads (`blockingCallFromThread`, `callFromThread`)."""

    reactor: Any
    infer: Callable[[InferenceRequest], Deferred[InferenceResult]]
    models: Any = None  # the facade: load / unload / resolve (pb_utils.load_model, unload_model, is_model_ready)
