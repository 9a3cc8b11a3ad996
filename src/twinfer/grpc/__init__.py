"""KServe v2 over gRPC: `inference.GRPCInferenceService` with grpcio's asyncio server on the reactor's own loop."""
