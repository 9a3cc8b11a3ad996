from __future__ import annotations

from twinfer.inference.model_config import TensorConfig
from twinfer.inference.platforms import platform_of
from twinfer.protocol import game_pb2
from twinfer.server.commands.base import Command, Reply
from twinfer.server.sessions import Session


class ModelMetadataCommand(Command):
    """A model's inputs and outputs (with labels), as a client needs them to build requests."""

    message_type = "model_metadata"

    def execute(self, session: Session, message: game_pb2.ClientMessage, reply: Reply) -> Reply:
        request = message.model_metadata
        facade = self.context.facade
        version = facade.resolve(request.model, request.version or None)
        config = version.config
        meta = reply.model_metadata
        meta.name = config.name
        meta.versions.extend(str(v) for v in sorted(facade.repository.model(config.name).versions))
        meta.platform = platform_of(config)  # the name KServe HTTP and gRPC report
        meta.max_batch_size = config.max_batch_size

        def fill(target: game_pb2.TensorMetadata, spec: TensorConfig) -> None:
            target.name = spec.name
            target.datatype = spec.datatype
            target.shape.extend(config.full_shape(spec))
            target.labels.extend(spec.labels or ())

        for spec in config.inputs:
            fill(meta.inputs.add(), spec)
        for spec in config.outputs:
            fill(meta.outputs.add(), spec)
        return reply
