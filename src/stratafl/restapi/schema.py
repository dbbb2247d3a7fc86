"""The bodies of the controller's REST API that are not records: requests and small replies.

Shared by the server (``controller/rest*.py``) and the client (``restapi/client.py``), like the
records of `stratafl.records`, so the two sides cannot drift apart. Every request body is
bounded (string lengths, list lengths, numbers) and refuses NaN and infinities: whoever
sends one may be hostile, and a body the schema admits is one the controller can serve.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from stratafl.records import SessionState, TokenRecord
from stratafl.security import Role
from stratafl.settings import SessionConfig

MAX_ID_CHARS = 256
"""Client, combiner and token names: as long as a token's subject may be."""
MAX_CSR_CHARS = 16 * 1024
"""A PEM certificate request is about 500 characters (ECDSA) to 1.7 k (RSA 4096)."""
MAX_HOSTS = 8
MAX_TOKEN_TTL_SECONDS = 5 * 365 * 24 * 3600.0
"""The longest lifetime the controller signs (``controller.trust.MAX_TOKEN_SECONDS``)."""
MAX_EXAMPLES = 2**53
"""Example counts weight averages as float64, which counts exactly up to 2**53."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
Host = Annotated[str, StringConstraints(min_length=1, max_length=253)]  # a DNS name's limit
IssuedRole = Literal[Role.ADMIN, Role.VIEWER, Role.METRICS, Role.COMBINER, Role.CLIENT]
"""The roles a token can be issued for: the controller makes its own token at each start."""


class Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Health(Body):
    status: str = "ok"


class DiscoveryInfo(Body):
    """Where combiners reach the controller's gRPC service, and what they verify peers with.

    ``token_public_key_pem`` checks clients' tokens; ``ca_pem`` is the federation's CA.
    Both are empty when the controller runs ``--insecure``.
    """

    grpc_address: str
    token_public_key_pem: str = ""
    ca_pem: str = ""


class AssignRequest(Body):
    """A client asking for a combiner. Its identity is its token's subject: ``client_id``
    may be left out, and one that differs is refused. A controller started ``--insecure``
    has no tokens and takes the id from here.

    ``preferred_combiner`` asks for one combiner (an operator's or an experiment's
    placement); the controller honours it only while that combiner is online and has room,
    and otherwise assigns as if it were absent."""

    client_id: Name | None = None
    failed_combiner: Name | None = None
    preferred_combiner: Name | None = None
    current_combiner: Name | None = Field(
        None,
        description="the combiner the client is connected to, when it only renews its ticket "
        "there: the controller keeps it there (no new assignment) while it is connected",
    )


class Assignment(Body):
    """The combiner a client should open its task stream to, and what the client needs
    there: ``ticket``, a token only that combiner accepts (empty from an ``--insecure``
    controller), and ``receipt_key``, the key (base64url) the client signs its receipts
    with, which only it and the controller hold."""

    combiner_id: str
    address: str
    ticket: str = ""
    receipt_key: str = ""


class TokenRequest(Body):
    """A new token; an admin hands it to a person, a combiner or a client."""

    name: Name = Field(description="a human label, e.g. 'hospital-3'")
    role: IssuedRole
    subject: Name | None = Field(
        None, description="the identity (a client or combiner id); defaults to name"
    )
    ttl_seconds: float | None = Field(
        None,
        gt=0,
        le=MAX_TOKEN_TTL_SECONDS,
        description="default: 1 day for clients and combiners (they renew it), 30 for admins "
        "and viewers, 365 for metrics scrapers",
    )
    max_examples: int | None = Field(
        None, ge=1, le=MAX_EXAMPLES, description="a client's cap on num_examples per update"
    )
    hosts: list[Host] = Field(
        default_factory=list,
        max_length=MAX_HOSTS,
        description="a combiner's certificate hosts: the only ones it may ask a certificate "
        "for (no wildcards, none of the controller's names)",
    )


class IssuedToken(Body):
    """A token, shown this once (the controller keeps only its record), and its record."""

    token: str
    record: TokenRecord


class CertificateRequest(Body):
    """A certificate for the caller's key; its name is the caller's token subject."""

    csr_pem: str = Field(max_length=MAX_CSR_CHARS, description="a PEM certificate request")
    hosts: list[Host] = Field(
        default_factory=list,
        max_length=MAX_HOSTS,
        description="names and IPs a combiner serves under; a client's certificate has none",
    )


class SignedCertificate(Body):
    certificate_pem: str
    ca_pem: str


class ErrorBody(Body):
    """Every error the REST API answers with: the error's class and one line naming the fix."""

    error: str
    detail: str


class Session(SessionState):
    """A session as `ControllerClient` reads it: `SessionRecord` with its settings typed,
    so ``session.config.rounds`` is an int and a misspelt setting fails in the editor, not
    at run time. (A session started by another stratafl version may not parse: use the
    same version on both sides.)"""

    config: SessionConfig
