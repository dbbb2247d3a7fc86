"""The bodies of the controller's REST API that are not records: requests and small replies.

Shared by the server (``controller/rest.py``) and the client (``api/client.py``), like the
records of `stratafl.records`, so the two sides cannot drift apart.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Health(Body):
    status: str = "ok"


class DiscoveryInfo(Body):
    """Where combiners reach the controller's gRPC service."""

    grpc_address: str


class AssignRequest(Body):
    client_id: str
    failed_combiner: str | None = None


class Assignment(Body):
    """The combiner a client should open its task stream to."""

    combiner_id: str
    address: str


class ErrorBody(Body):
    """Every error the REST API answers with: the error's class and one line naming the fix."""

    error: str
    detail: str
