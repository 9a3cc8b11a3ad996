from __future__ import annotations

from twisted.internet.defer import Deferred

from twinfer.inference.types import InferenceRequest, InferenceResult
from twinfer.protocol import game_pb2
from twinfer.protocol.tensors import numpy_to_tensor, tensor_to_numpy
from twinfer.server.commands.base import Command, Reply
from twinfer.server.sessions import Session


class InferCommand(Command):
    """Decodes the tensors, hands the request to the facade, encodes the outputs."""

    message_type = "infer"

    def execute(self, session: Session, message: game_pb2.ClientMessage, reply: Reply) -> Deferred[Reply]:
        infer = message.infer
        budget = self.context.facade.element_budget()
        request = InferenceRequest(
            model=infer.model,
            inputs={t.name: tensor_to_numpy(t, budget) for t in infer.inputs},
            version=infer.version or None,
            outputs=list(infer.outputs) or None,
            timeout_ms=infer.timeout_ms or None,
        )
        return self.context.facade.infer(request).addCallback(self._encode, reply)

    @staticmethod
    def _encode(result: InferenceResult, reply: Reply) -> Reply:
        out = reply.infer
        out.model = result.model
        out.version = result.version
        for name, array in result.outputs.items():
            numpy_to_tensor(name, array, out.outputs.add())
        return reply
