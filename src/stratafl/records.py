"""The federation's records: what the state store keeps and the REST API serves.

One set of typed rows for three places (the store returns them, the controller's REST API
answers with them, the REST client parses them), so a field renamed in one place cannot
drift from the others. They are frozen pydantic models: validated when built from a
database row or a JSON body, and described in ``/openapi.json`` for free.
"""

from __future__ import annotations

import statistics
from collections import Counter
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from stratafl.status import (
    ClientStatus,
    CombinerStatus,
    OutcomeStatus,
    RoundStatus,
    SessionStatus,
)


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list endpoint: its records, oldest first, and the cursor of the next
    page (``after=next``), None on the last page. A cursor is opaque: pass it back as is."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    next: str | None = None


class CombinerRecord(Record):
    id: str
    address: str
    max_clients: int
    status: CombinerStatus
    num_clients: int = 0
    registered_at: float
    last_heartbeat: float


class ClientRecord(Record):
    id: str
    combiner_id: str | None = None
    status: ClientStatus
    last_seen: float


class ModelRecord(Record):
    id: str
    parent_id: str | None = None
    session_id: str | None = None
    round: int | None = None
    size_bytes: int
    num_parameters: int
    created_at: float
    pruned_at: float | None = Field(
        None, description="when the retention policy deleted its file (the row stays)"
    )


class AppRecord(Record):
    """An app package the controller holds (`strata app publish`), named by its digest."""

    sha256: str = Field(description="the SHA-256 of the package's bytes: what a session names")
    filename: str = Field(description="the wheel's or source archive's file name")
    size_bytes: int


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class PromiseRecord(Record):
    """The promise check of a session (`stratafl.launch.report.PromiseCheck`): the federated
    model's test accuracy beside a centralized model and clients training alone, on the
    same budget of epochs. Stored with the session by ``PUT /sessions/{id}/promise``."""

    model_config = ConfigDict(
        frozen=True, from_attributes=True, extra="forbid", allow_inf_nan=False
    )

    epochs_budget: int = Field(ge=0, le=1_000_000)
    centralized_accuracy: Fraction
    federated_accuracy: Fraction
    client_alone_best: Fraction
    client_alone_mean: Fraction


class SessionState(Record):
    """What every view of a session shares; its settings are typed by each view."""

    id: str
    status: SessionStatus
    reason: str = ""
    seed_model_id: str
    final_model_id: str | None = None
    rounds_done: int = 0
    created_at: float
    finished_at: float | None = None
    promise: PromiseRecord | None = None
    best_model_id: str | None = Field(
        None,
        description="the finished round's model that scored best by the session's "
        "best_model_by (the first to reach that score); the retention policy keeps it",
    )
    best_score: float | None = Field(None, description="its score by best_model_by")


class SessionRecord(SessionState):
    """A session as the controller stores and serves it. Its settings stay JSON here: a
    session a newer or older version started must still list (and fail to resume with a
    reason, `controller.recovery`); `stratafl.restapi.Session` is the typed view."""

    config: dict[str, Any] = Field(description="the SessionConfig the session was started with")


class ClientOutcome(Record):
    """One client's task in one round, as its combiner reported it."""

    client_id: str
    combiner_id: str = ""
    status: OutcomeStatus
    reason: str = ""
    num_examples: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    seconds: float = 0.0
    left_out: str = Field(
        "",
        description="set when the update was accepted (status ok) but the session's rule "
        "left it out of the model (krum, multikrum, bulyan, flame): why, in a sentence",
    )


class Traffic(Record):
    """Bytes a round moved on each link, each way (serialized messages, both tiers), and
    what the clients' updates would have cost uncompressed (the session's compression
    acts on that link only: partials and models travel raw)."""

    clients_up: int = 0
    clients_down: int = 0
    combiners_up: int = 0
    combiners_down: int = 0
    updates_raw: int = Field(
        0,
        description="the raw model size for every update that arrived: with clients_up, "
        "the client link's compression ratio",
    )
    model_bytes: int = Field(0, description="the round's global model, raw (tensor bytes)")

    @property
    def moved(self) -> int:
        """Every byte on the wire: both links, both ways."""
        return self.clients_up + self.clients_down + self.combiners_up + self.combiners_down


class Validation(Record):
    """The clients' scores of a round's new model.

    Each metric's mean over the clients, weighted by their validation examples, is a field
    of its own (``accuracy``, ``loss``, ...: whatever the app reports), beside the count
    and the per-client scores.
    """

    model_config = ConfigDict(frozen=True, from_attributes=True, extra="allow")

    clients: int = 0
    per_client: dict[str, dict[str, float]] = Field(default_factory=dict)

    def mean(self, metric: str) -> float | None:
        value = (self.model_extra or {}).get(metric)
        return None if value is None else float(value)


class RoundRecord(Record):
    """One round, recorded once when it ends, whatever its outcome."""

    session_id: str
    number: int
    status: RoundStatus
    reason: str = ""
    model_in: str
    model_out: str | None = None
    started_at: float
    duration: float
    participants: list[str] = Field(default_factory=list)
    outcomes: list[ClientOutcome] = Field(default_factory=list)
    validation: Validation = Field(default_factory=Validation)
    traffic: Traffic = Field(default_factory=Traffic)
    timings: dict[str, float] = Field(default_factory=dict)


class ClientSpread(Record):
    """How the clients' validation accuracies spread: the mean client is not every client."""

    mean: float
    worst: float
    p10: float = Field(description="the 10th percentile: nine clients in ten do better")
    spread: float = Field(description="best minus worst")

    @classmethod
    def of(cls, scores: list[float]) -> ClientSpread | None:
        if not scores:
            return None
        ranked = sorted(scores)
        p10 = (
            ranked[0]
            if len(ranked) < 2
            else statistics.quantiles(ranked, n=10, method="inclusive")[0]
        )
        return cls(
            mean=statistics.fmean(ranked),
            worst=ranked[0],
            p10=p10,
            spread=ranked[-1] - ranked[0],
        )


class RoundProgress(Record):
    """The ``data`` of a ``round_finished`` or ``round_failed`` event: a round in one line,
    enough to draw a live view without fetching the round's record."""

    round: int
    status: RoundStatus
    reason: str = ""
    accuracy: float | None = Field(None, description="validation mean (examples-weighted)")
    loss: float | None = None
    client_accuracy: ClientSpread | None = None
    duration: float = 0.0
    timings: dict[str, float] = Field(default_factory=dict)
    bytes: Traffic = Field(default_factory=Traffic)
    outcomes: dict[str, int] = Field(default_factory=dict, description="clients by status")
    model_out: str | None = None

    @classmethod
    def of(cls, record: RoundRecord) -> RoundProgress:
        per_client = record.validation.per_client.values()
        return cls(
            round=record.number,
            status=record.status,
            reason=record.reason,
            accuracy=record.validation.mean("accuracy"),
            loss=record.validation.mean("loss"),
            client_accuracy=ClientSpread.of(
                [float(m["accuracy"]) for m in per_client if "accuracy" in m]
            ),
            duration=record.duration,
            timings=record.timings,
            bytes=record.traffic,
            outcomes=dict(Counter(str(o.status) for o in record.outcomes)),
            model_out=record.model_out,
        )


SESSION_END_KINDS = frozenset(f"session_{status}" for status in SessionStatus) - {"session_running"}
"""The kinds of the event that ends a session (one per session): a stream of its events
closes after it."""


class EventRecord(Record):
    id: int
    time: float
    kind: str
    source: str
    message: str
    session_id: str | None = Field(None, description="the session it belongs to, if any")
    data: dict[str, Any] = Field(default_factory=dict)


class TokenRecord(Record):
    """A token the controller issued: its claims and label, never the token itself.

    Kept so an admin can list what was handed out and revoke it by ``token_id``; a stolen
    database therefore yields no usable credential.
    """

    token_id: str
    name: str = Field(description="a human label, e.g. 'hospital-3'")
    subject: str
    role: str = Field(description="admin, viewer, metrics, combiner, client or controller")
    issued_at: float
    expires_at: float
    max_examples: int | None = None
    revoked_at: float | None = None


class AuditAction(StrEnum):
    """What an admin did that the audit log keeps (`AuditRecord.action`)."""

    TOKEN_ISSUED = "token_issued"
    TOKEN_REVOKED = "token_revoked"
    SESSION_STARTED = "session_started"
    SESSION_STOPPED = "session_stopped"
    SESSION_CANCELLED = "session_cancelled"
    MODEL_UPLOADED = "model_uploaded"


class AuditRecord(Record):
    """One admin action: who (the caller's token subject), what, on which id, and when.

    Written by the REST API as it acts, never by the caller, so a script cannot leave
    its own actions out; events say what the federation did, this says who asked."""

    id: int
    time: float
    actor: str = Field(description="the subject of the token that asked")
    action: AuditAction
    target: str = Field(description="the id acted on: a token, session or model id")
    detail: dict[str, Any] = Field(
        default_factory=dict, description="e.g. an issued token's role and name"
    )
