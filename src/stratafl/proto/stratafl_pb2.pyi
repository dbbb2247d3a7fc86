from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    TRAIN: _ClassVar[TaskKind]
    VALIDATE: _ClassVar[TaskKind]

class OutcomeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_STATUS_UNSPECIFIED: _ClassVar[OutcomeStatus]
    OUTCOME_PENDING: _ClassVar[OutcomeStatus]
    OUTCOME_OK: _ClassVar[OutcomeStatus]
    OUTCOME_REJECTED: _ClassVar[OutcomeStatus]
    OUTCOME_FAILED: _ClassVar[OutcomeStatus]
    OUTCOME_DROPPED: _ClassVar[OutcomeStatus]
    OUTCOME_TIMEOUT: _ClassVar[OutcomeStatus]
TASK_KIND_UNSPECIFIED: TaskKind
TRAIN: TaskKind
VALIDATE: TaskKind
OUTCOME_STATUS_UNSPECIFIED: OutcomeStatus
OUTCOME_PENDING: OutcomeStatus
OUTCOME_OK: OutcomeStatus
OUTCOME_REJECTED: OutcomeStatus
OUTCOME_FAILED: OutcomeStatus
OUTCOME_DROPPED: OutcomeStatus
OUTCOME_TIMEOUT: OutcomeStatus

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelHeader(_message.Message):
    __slots__ = ("model_id", "tensors")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    def __init__(self, model_id: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ModelHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ModelHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("model_id", "task_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    task_id: str
    def __init__(self, model_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("ok", "message")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ClientHello(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "kind", "model_id", "session_id", "round", "config_json", "compression", "partial_updates", "round_id", "grant", "app")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_UPDATES_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: TaskKind
    model_id: str
    session_id: str
    round: int
    config_json: str
    compression: str
    partial_updates: str
    round_id: str
    grant: bytes
    app: AppRef
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[_Union[TaskKind, str]] = ..., model_id: _Optional[str] = ..., session_id: _Optional[str] = ..., round: _Optional[int] = ..., config_json: _Optional[str] = ..., compression: _Optional[str] = ..., partial_updates: _Optional[str] = ..., round_id: _Optional[str] = ..., grant: _Optional[bytes] = ..., app: _Optional[_Union[AppRef, _Mapping]] = ...) -> None: ...

class AppRef(_message.Message):
    __slots__ = ("sha256", "entry")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    entry: str
    def __init__(self, sha256: _Optional[str] = ..., entry: _Optional[str] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("task_id", "client_id", "num_examples", "metrics", "model", "compute_seconds", "codec", "receipt")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    client_id: str
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    model: ModelHeader
    compute_seconds: float
    codec: str
    receipt: bytes
    def __init__(self, task_id: _Optional[str] = ..., client_id: _Optional[str] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., model: _Optional[_Union[ModelHeader, _Mapping]] = ..., compute_seconds: _Optional[float] = ..., codec: _Optional[str] = ..., receipt: _Optional[bytes] = ...) -> None: ...

class UpdateChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ValidationReport(_message.Message):
    __slots__ = ("task_id", "client_id", "metrics", "receipt")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    client_id: str
    metrics: _containers.ScalarMap[str, float]
    receipt: bytes
    def __init__(self, task_id: _Optional[str] = ..., client_id: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., receipt: _Optional[bytes] = ...) -> None: ...

class TaskFailure(_message.Message):
    __slots__ = ("task_id", "client_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    client_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., client_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RoundSettings(_message.Message):
    __slots__ = ("aggregator", "max_examples_per_client", "compression", "partial_updates", "weight_cap", "median_cap_ratio", "app")
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    MAX_EXAMPLES_PER_CLIENT_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_UPDATES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_CAP_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_CAP_RATIO_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    aggregator: str
    max_examples_per_client: int
    compression: str
    partial_updates: str
    weight_cap: int
    median_cap_ratio: float
    app: AppRef
    def __init__(self, aggregator: _Optional[str] = ..., max_examples_per_client: _Optional[int] = ..., compression: _Optional[str] = ..., partial_updates: _Optional[str] = ..., weight_cap: _Optional[int] = ..., median_cap_ratio: _Optional[float] = ..., app: _Optional[_Union[AppRef, _Mapping]] = ...) -> None: ...

class RoundSpec(_message.Message):
    __slots__ = ("session_id", "round", "kind", "model_id", "num_clients", "timeout_seconds", "config_json", "seed", "settings", "client_ids", "round_id", "quorum", "grant", "receipt_keys")
    class ReceiptKeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_KEYS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    round: int
    kind: TaskKind
    model_id: str
    num_clients: int
    timeout_seconds: float
    config_json: str
    seed: int
    settings: RoundSettings
    client_ids: _containers.RepeatedScalarFieldContainer[str]
    round_id: str
    quorum: int
    grant: bytes
    receipt_keys: _containers.ScalarMap[str, bytes]
    def __init__(self, session_id: _Optional[str] = ..., round: _Optional[int] = ..., kind: _Optional[_Union[TaskKind, str]] = ..., model_id: _Optional[str] = ..., num_clients: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., config_json: _Optional[str] = ..., seed: _Optional[int] = ..., settings: _Optional[_Union[RoundSettings, _Mapping]] = ..., client_ids: _Optional[_Iterable[str]] = ..., round_id: _Optional[str] = ..., quorum: _Optional[int] = ..., grant: _Optional[bytes] = ..., receipt_keys: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class ClientOutcome(_message.Message):
    __slots__ = ("client_id", "status", "reason", "num_examples", "metrics", "bytes_up", "bytes_down", "seconds", "left_out", "receipt")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    BYTES_UP_FIELD_NUMBER: _ClassVar[int]
    BYTES_DOWN_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    LEFT_OUT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    status: OutcomeStatus
    reason: str
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    bytes_up: int
    bytes_down: int
    seconds: float
    left_out: str
    receipt: bytes
    def __init__(self, client_id: _Optional[str] = ..., status: _Optional[_Union[OutcomeStatus, str]] = ..., reason: _Optional[str] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., bytes_up: _Optional[int] = ..., bytes_down: _Optional[int] = ..., seconds: _Optional[float] = ..., left_out: _Optional[str] = ..., receipt: _Optional[bytes] = ...) -> None: ...

class RoundResultHeader(_message.Message):
    __slots__ = ("combiner_id", "contributors", "total_weight", "outcomes", "model", "seconds", "error", "model_bytes_down", "tensor_weights")
    class TensorWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    COMBINER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_BYTES_DOWN_FIELD_NUMBER: _ClassVar[int]
    TENSOR_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    combiner_id: str
    contributors: int
    total_weight: float
    outcomes: _containers.RepeatedCompositeFieldContainer[ClientOutcome]
    model: ModelHeader
    seconds: float
    error: str
    model_bytes_down: int
    tensor_weights: _containers.ScalarMap[str, float]
    def __init__(self, combiner_id: _Optional[str] = ..., contributors: _Optional[int] = ..., total_weight: _Optional[float] = ..., outcomes: _Optional[_Iterable[_Union[ClientOutcome, _Mapping]]] = ..., model: _Optional[_Union[ModelHeader, _Mapping]] = ..., seconds: _Optional[float] = ..., error: _Optional[str] = ..., model_bytes_down: _Optional[int] = ..., tensor_weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class RoundResultChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: RoundResultHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[RoundResultHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CombinerStatus(_message.Message):
    __slots__ = ("combiner_id", "client_ids")
    COMBINER_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    combiner_id: str
    client_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, combiner_id: _Optional[str] = ..., client_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class MoveRequest(_message.Message):
    __slots__ = ("client_ids",)
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    client_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, client_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class MoveReply(_message.Message):
    __slots__ = ("moved",)
    MOVED_FIELD_NUMBER: _ClassVar[int]
    moved: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, moved: _Optional[_Iterable[str]] = ...) -> None: ...

class CombinerInfo(_message.Message):
    __slots__ = ("combiner_id", "address", "max_clients")
    COMBINER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MAX_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    combiner_id: str
    address: str
    max_clients: int
    def __init__(self, combiner_id: _Optional[str] = ..., address: _Optional[str] = ..., max_clients: _Optional[int] = ...) -> None: ...

class CombinerHeartbeat(_message.Message):
    __slots__ = ("combiner_id", "client_ids")
    COMBINER_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    combiner_id: str
    client_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, combiner_id: _Optional[str] = ..., client_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ClientEvent(_message.Message):
    __slots__ = ("combiner_id", "client_id", "connected")
    COMBINER_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    combiner_id: str
    client_id: str
    connected: bool
    def __init__(self, combiner_id: _Optional[str] = ..., client_id: _Optional[str] = ..., connected: _Optional[bool] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("ok", "message", "revoked_token_ids")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REVOKED_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    revoked_token_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ..., revoked_token_ids: _Optional[_Iterable[str]] = ...) -> None: ...
