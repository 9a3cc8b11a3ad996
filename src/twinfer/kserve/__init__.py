"""KServe v2 / Open Inference Protocol pieces shared by the HTTP and gRPC front-ends.

Metadata, model configuration, statistics and the repository index are built once as the public protobuf
messages (`tritonclient.grpc.service_pb2`, `model_config_pb2`); gRPC sends them as they are, HTTP renders them as
JSON with `json_proto.to_json_dict`. So the two transports cannot drift apart.
"""
