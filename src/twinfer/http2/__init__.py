"""HTTP/2 (RFC 9113) on a Twisted Protocol, the transport of the gRPC front-end (twinfer.grpc.native_server)."""
