"""Who may call: the roles an identity carries.

A caller's role comes from its credentials (a signed token, a certificate the federation's
CA issued), never from a field it sends. The tables of which role may call which RPC or
endpoint live with the transport and the REST API; this module only names the roles, so
those tables, the tokens and the store agree on one spelling.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Role"]


class Role(StrEnum):
    """The roles of a federation's identities; the values are the on-the-wire spelling."""

    ADMIN = "admin"
    """People and scripts that run sessions and manage the federation."""
    COMBINER = "combiner"
    """A combiner process: serves clients, reports to the controller."""
    CLIENT = "client"
    """A data holder: trains and validates on its own data."""
    CONTROLLER = "controller"
    """The controller itself, when it calls combiners (asks them for a round's partial)."""
    VIEWER = "viewer"
    """Read-only people and scripts: every list, record, model and event stream the REST
    API serves to admins, and the metrics; never a write (start, stop, upload, tokens)."""
    METRICS = "metrics"
    """A Prometheus scraper: ``GET /metrics`` of the controller and the combiners, nothing
    else, so the credential in its scrape config can neither read models nor run sessions."""
