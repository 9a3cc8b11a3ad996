from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_FRAME: _ClassVar[ErrorCode]
    ERROR_CODE_FRAME_TOO_LARGE: _ClassVar[ErrorCode]
    ERROR_CODE_MALFORMED_MESSAGE: _ClassVar[ErrorCode]
    ERROR_CODE_UNKNOWN_MESSAGE: _ClassVar[ErrorCode]
    ERROR_CODE_UNAUTHENTICATED: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_INPUT: _ClassVar[ErrorCode]
    ERROR_CODE_MODEL_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_MODEL_NOT_READY: _ClassVar[ErrorCode]
    ERROR_CODE_OVERLOADED: _ClassVar[ErrorCode]
    ERROR_CODE_TIMEOUT: _ClassVar[ErrorCode]
    ERROR_CODE_INFERENCE_FAILED: _ClassVar[ErrorCode]
    ERROR_CODE_SESSION_REPLACED: _ClassVar[ErrorCode]
    ERROR_CODE_IDLE_TIMEOUT: _ClassVar[ErrorCode]
    ERROR_CODE_UNAVAILABLE: _ClassVar[ErrorCode]
    ERROR_CODE_PERMISSION_DENIED: _ClassVar[ErrorCode]
    ERROR_CODE_STREAM_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_UNSUPPORTED_PROTOCOL: _ClassVar[ErrorCode]

class CalibrationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALIBRATION_STATE_NONE: _ClassVar[CalibrationState]
    CALIBRATION_STATE_CALIBRATING: _ClassVar[CalibrationState]
    CALIBRATION_STATE_CALIBRATED: _ClassVar[CalibrationState]

class StreamCloseReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_CLOSE_REASON_UNSPECIFIED: _ClassVar[StreamCloseReason]
    STREAM_CLOSE_REASON_HEARTBEAT_TIMEOUT: _ClassVar[StreamCloseReason]
    STREAM_CLOSE_REASON_MODEL_UNLOADED: _ClassVar[StreamCloseReason]
    STREAM_CLOSE_REASON_SERVER_DRAIN: _ClassVar[StreamCloseReason]

class FrameErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_ERROR_REASON_UNSPECIFIED: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_WRONG_SIZE: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_UNDECODABLE: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_TOO_LARGE: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_INFERENCE: _ClassVar[FrameErrorReason]
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_INTERNAL: ErrorCode
ERROR_CODE_INVALID_FRAME: ErrorCode
ERROR_CODE_FRAME_TOO_LARGE: ErrorCode
ERROR_CODE_MALFORMED_MESSAGE: ErrorCode
ERROR_CODE_UNKNOWN_MESSAGE: ErrorCode
ERROR_CODE_UNAUTHENTICATED: ErrorCode
ERROR_CODE_INVALID_INPUT: ErrorCode
ERROR_CODE_MODEL_NOT_FOUND: ErrorCode
ERROR_CODE_MODEL_NOT_READY: ErrorCode
ERROR_CODE_OVERLOADED: ErrorCode
ERROR_CODE_TIMEOUT: ErrorCode
ERROR_CODE_INFERENCE_FAILED: ErrorCode
ERROR_CODE_SESSION_REPLACED: ErrorCode
ERROR_CODE_IDLE_TIMEOUT: ErrorCode
ERROR_CODE_UNAVAILABLE: ErrorCode
ERROR_CODE_PERMISSION_DENIED: ErrorCode
ERROR_CODE_STREAM_NOT_FOUND: ErrorCode
ERROR_CODE_UNSUPPORTED_PROTOCOL: ErrorCode
CALIBRATION_STATE_NONE: CalibrationState
CALIBRATION_STATE_CALIBRATING: CalibrationState
CALIBRATION_STATE_CALIBRATED: CalibrationState
STREAM_CLOSE_REASON_UNSPECIFIED: StreamCloseReason
STREAM_CLOSE_REASON_HEARTBEAT_TIMEOUT: StreamCloseReason
STREAM_CLOSE_REASON_MODEL_UNLOADED: StreamCloseReason
STREAM_CLOSE_REASON_SERVER_DRAIN: StreamCloseReason
FRAME_ERROR_REASON_UNSPECIFIED: FrameErrorReason
FRAME_ERROR_REASON_WRONG_SIZE: FrameErrorReason
FRAME_ERROR_REASON_UNDECODABLE: FrameErrorReason
FRAME_ERROR_REASON_TOO_LARGE: FrameErrorReason
FRAME_ERROR_REASON_INFERENCE: FrameErrorReason

class Tensor(_message.Message):
    __slots__ = ("name", "datatype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("token", "client_name", "protocol_version")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    token: str
    client_name: str
    protocol_version: int
    def __init__(self, token: _Optional[str] = ..., client_name: _Optional[str] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ("client_time_ns",)
    CLIENT_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    client_time_ns: int
    def __init__(self, client_time_ns: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelMetadataRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("model", "version", "inputs", "outputs", "timeout_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    timeout_ms: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., outputs: _Optional[_Iterable[str]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class StreamTarget(_message.Message):
    __slots__ = ("kind", "host", "port", "subject")
    KIND_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    host: str
    port: int
    subject: str
    def __init__(self, kind: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., subject: _Optional[str] = ...) -> None: ...

class OpenStreamRequest(_message.Message):
    __slots__ = ("model", "version", "pixel_format", "width", "height", "targets", "smoothing", "min_cutoff", "beta", "d_cutoff", "want_landmarks", "bottom_up")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    MIN_CUTOFF_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    D_CUTOFF_FIELD_NUMBER: _ClassVar[int]
    WANT_LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_UP_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    pixel_format: str
    width: int
    height: int
    targets: _containers.RepeatedCompositeFieldContainer[StreamTarget]
    smoothing: bool
    min_cutoff: float
    beta: float
    d_cutoff: float
    want_landmarks: bool
    bottom_up: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., pixel_format: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., targets: _Optional[_Iterable[_Union[StreamTarget, _Mapping]]] = ..., smoothing: _Optional[bool] = ..., min_cutoff: _Optional[float] = ..., beta: _Optional[float] = ..., d_cutoff: _Optional[float] = ..., want_landmarks: _Optional[bool] = ..., bottom_up: _Optional[bool] = ...) -> None: ...

class OpenStreamResponse(_message.Message):
    __slots__ = ("stream_id", "udp_host", "udp_port", "key", "labels", "max_datagram_bytes", "heartbeat_timeout_s")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    UDP_HOST_FIELD_NUMBER: _ClassVar[int]
    UDP_PORT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_DATAGRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    udp_host: str
    udp_port: int
    key: bytes
    labels: _containers.RepeatedScalarFieldContainer[str]
    max_datagram_bytes: int
    heartbeat_timeout_s: float
    def __init__(self, stream_id: _Optional[int] = ..., udp_host: _Optional[str] = ..., udp_port: _Optional[int] = ..., key: _Optional[bytes] = ..., labels: _Optional[_Iterable[str]] = ..., max_datagram_bytes: _Optional[int] = ..., heartbeat_timeout_s: _Optional[float] = ...) -> None: ...

class CloseStreamRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    def __init__(self, stream_id: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("stream_id", "target")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    target: StreamTarget
    def __init__(self, stream_id: _Optional[int] = ..., target: _Optional[_Union[StreamTarget, _Mapping]] = ...) -> None: ...

class UnsubscribeRequest(_message.Message):
    __slots__ = ("stream_id", "target")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    target: StreamTarget
    def __init__(self, stream_id: _Optional[int] = ..., target: _Optional[_Union[StreamTarget, _Mapping]] = ...) -> None: ...

class StreamAck(_message.Message):
    __slots__ = ("stream_id", "targets")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    targets: int
    def __init__(self, stream_id: _Optional[int] = ..., targets: _Optional[int] = ...) -> None: ...

class FaceResult(_message.Message):
    __slots__ = ("tracked", "score", "head_yaw", "head_pitch", "head_roll", "head_x", "head_y", "head_z", "left_eye_yaw", "left_eye_pitch", "right_eye_yaw", "right_eye_pitch", "calibration", "landmarks")
    TRACKED_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    HEAD_YAW_FIELD_NUMBER: _ClassVar[int]
    HEAD_PITCH_FIELD_NUMBER: _ClassVar[int]
    HEAD_ROLL_FIELD_NUMBER: _ClassVar[int]
    HEAD_X_FIELD_NUMBER: _ClassVar[int]
    HEAD_Y_FIELD_NUMBER: _ClassVar[int]
    HEAD_Z_FIELD_NUMBER: _ClassVar[int]
    LEFT_EYE_YAW_FIELD_NUMBER: _ClassVar[int]
    LEFT_EYE_PITCH_FIELD_NUMBER: _ClassVar[int]
    RIGHT_EYE_YAW_FIELD_NUMBER: _ClassVar[int]
    RIGHT_EYE_PITCH_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    tracked: bool
    score: float
    head_yaw: float
    head_pitch: float
    head_roll: float
    head_x: float
    head_y: float
    head_z: float
    left_eye_yaw: float
    left_eye_pitch: float
    right_eye_yaw: float
    right_eye_pitch: float
    calibration: CalibrationState
    landmarks: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, tracked: _Optional[bool] = ..., score: _Optional[float] = ..., head_yaw: _Optional[float] = ..., head_pitch: _Optional[float] = ..., head_roll: _Optional[float] = ..., head_x: _Optional[float] = ..., head_y: _Optional[float] = ..., head_z: _Optional[float] = ..., left_eye_yaw: _Optional[float] = ..., left_eye_pitch: _Optional[float] = ..., right_eye_yaw: _Optional[float] = ..., right_eye_pitch: _Optional[float] = ..., calibration: _Optional[_Union[CalibrationState, str]] = ..., landmarks: _Optional[_Iterable[float]] = ...) -> None: ...

class StreamResult(_message.Message):
    __slots__ = ("stream_id", "sequence", "capture_time_ns", "send_time_ns", "values", "labels", "model_version", "face")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    SEND_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    sequence: int
    capture_time_ns: int
    send_time_ns: int
    values: _containers.RepeatedScalarFieldContainer[float]
    labels: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    face: FaceResult
    def __init__(self, stream_id: _Optional[int] = ..., sequence: _Optional[int] = ..., capture_time_ns: _Optional[int] = ..., send_time_ns: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ..., labels: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., face: _Optional[_Union[FaceResult, _Mapping]] = ...) -> None: ...

class CalibrateRequest(_message.Message):
    __slots__ = ("stream_id", "seconds")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    seconds: float
    def __init__(self, stream_id: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class CalibrationStatus(_message.Message):
    __slots__ = ("stream_id", "state", "seconds_left")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_LEFT_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    state: CalibrationState
    seconds_left: float
    def __init__(self, stream_id: _Optional[int] = ..., state: _Optional[_Union[CalibrationState, str]] = ..., seconds_left: _Optional[float] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("request_id", "login", "ping", "list_models", "model_metadata", "infer", "open_stream", "close_stream", "subscribe", "unsubscribe", "calibrate")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LOGIN_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    LIST_MODELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_METADATA_FIELD_NUMBER: _ClassVar[int]
    INFER_FIELD_NUMBER: _ClassVar[int]
    OPEN_STREAM_FIELD_NUMBER: _ClassVar[int]
    CLOSE_STREAM_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    login: LoginRequest
    ping: PingRequest
    list_models: ListModelsRequest
    model_metadata: ModelMetadataRequest
    infer: InferRequest
    open_stream: OpenStreamRequest
    close_stream: CloseStreamRequest
    subscribe: SubscribeRequest
    unsubscribe: UnsubscribeRequest
    calibrate: CalibrateRequest
    def __init__(self, request_id: _Optional[int] = ..., login: _Optional[_Union[LoginRequest, _Mapping]] = ..., ping: _Optional[_Union[PingRequest, _Mapping]] = ..., list_models: _Optional[_Union[ListModelsRequest, _Mapping]] = ..., model_metadata: _Optional[_Union[ModelMetadataRequest, _Mapping]] = ..., infer: _Optional[_Union[InferRequest, _Mapping]] = ..., open_stream: _Optional[_Union[OpenStreamRequest, _Mapping]] = ..., close_stream: _Optional[_Union[CloseStreamRequest, _Mapping]] = ..., subscribe: _Optional[_Union[SubscribeRequest, _Mapping]] = ..., unsubscribe: _Optional[_Union[UnsubscribeRequest, _Mapping]] = ..., calibrate: _Optional[_Union[CalibrateRequest, _Mapping]] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("min_protocol_version", "target_kinds", "pixel_formats", "max_frame_bytes", "max_in_flight", "max_datagram_bytes", "max_fragments", "max_streams_per_session", "heartbeat_timeout_s", "max_side")
    MIN_PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_KINDS_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FORMATS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_DATAGRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_PER_SESSION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    min_protocol_version: int
    target_kinds: _containers.RepeatedScalarFieldContainer[str]
    pixel_formats: _containers.RepeatedScalarFieldContainer[str]
    max_frame_bytes: int
    max_in_flight: int
    max_datagram_bytes: int
    max_fragments: int
    max_streams_per_session: int
    heartbeat_timeout_s: float
    max_side: int
    def __init__(self, min_protocol_version: _Optional[int] = ..., target_kinds: _Optional[_Iterable[str]] = ..., pixel_formats: _Optional[_Iterable[str]] = ..., max_frame_bytes: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., max_datagram_bytes: _Optional[int] = ..., max_fragments: _Optional[int] = ..., max_streams_per_session: _Optional[int] = ..., heartbeat_timeout_s: _Optional[float] = ..., max_side: _Optional[int] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("session_id", "user", "expires_at_unix", "protocol_version", "capabilities")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    user: str
    expires_at_unix: int
    protocol_version: int
    capabilities: Capabilities
    def __init__(self, session_id: _Optional[str] = ..., user: _Optional[str] = ..., expires_at_unix: _Optional[int] = ..., protocol_version: _Optional[int] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("client_time_ns", "server_time_ns")
    CLIENT_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    client_time_ns: int
    server_time_ns: int
    def __init__(self, client_time_ns: _Optional[int] = ..., server_time_ns: _Optional[int] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "versions", "state", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    state: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class TensorMetadata(_message.Message):
    __slots__ = ("name", "datatype", "shape", "labels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelMetadataResponse(_message.Message):
    __slots__ = ("name", "versions", "platform", "inputs", "outputs", "max_batch_size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    platform: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorMetadata]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorMetadata]
    max_batch_size: int
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., platform: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorMetadata, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorMetadata, _Mapping]]] = ..., max_batch_size: _Optional[int] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("model", "version", "outputs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class Kicked(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    reason: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class StreamClosed(_message.Message):
    __slots__ = ("stream_id", "reason", "detail")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    reason: StreamCloseReason
    detail: str
    def __init__(self, stream_id: _Optional[int] = ..., reason: _Optional[_Union[StreamCloseReason, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class FrameErrors(_message.Message):
    __slots__ = ("stream_id", "reason", "count", "total", "last_sequence", "message", "code")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    reason: FrameErrorReason
    count: int
    total: int
    last_sequence: int
    message: str
    code: ErrorCode
    def __init__(self, stream_id: _Optional[int] = ..., reason: _Optional[_Union[FrameErrorReason, str]] = ..., count: _Optional[int] = ..., total: _Optional[int] = ..., last_sequence: _Optional[int] = ..., message: _Optional[str] = ..., code: _Optional[_Union[ErrorCode, str]] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("request_id", "login", "pong", "list_models", "model_metadata", "infer", "error", "kicked", "open_stream", "stream_ack", "calibration_status", "stream_closed", "frame_errors")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LOGIN_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    LIST_MODELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_METADATA_FIELD_NUMBER: _ClassVar[int]
    INFER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    KICKED_FIELD_NUMBER: _ClassVar[int]
    OPEN_STREAM_FIELD_NUMBER: _ClassVar[int]
    STREAM_ACK_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    STREAM_CLOSED_FIELD_NUMBER: _ClassVar[int]
    FRAME_ERRORS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    login: LoginResponse
    pong: Pong
    list_models: ListModelsResponse
    model_metadata: ModelMetadataResponse
    infer: InferResponse
    error: Error
    kicked: Kicked
    open_stream: OpenStreamResponse
    stream_ack: StreamAck
    calibration_status: CalibrationStatus
    stream_closed: StreamClosed
    frame_errors: FrameErrors
    def __init__(self, request_id: _Optional[int] = ..., login: _Optional[_Union[LoginResponse, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., list_models: _Optional[_Union[ListModelsResponse, _Mapping]] = ..., model_metadata: _Optional[_Union[ModelMetadataResponse, _Mapping]] = ..., infer: _Optional[_Union[InferResponse, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., kicked: _Optional[_Union[Kicked, _Mapping]] = ..., open_stream: _Optional[_Union[OpenStreamResponse, _Mapping]] = ..., stream_ack: _Optional[_Union[StreamAck, _Mapping]] = ..., calibration_status: _Optional[_Union[CalibrationStatus, _Mapping]] = ..., stream_closed: _Optional[_Union[StreamClosed, _Mapping]] = ..., frame_errors: _Optional[_Union[FrameErrors, _Mapping]] = ...) -> None: ...
