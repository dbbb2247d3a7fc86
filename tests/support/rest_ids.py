"""Paths of the REST API with ids that name nothing, for the tests that walk every operation."""

from __future__ import annotations

UNKNOWN_ID = "~none"
"""A path id that names nothing: ids are taken by unique prefix, and "~" begins no id (token
ids are base64url), so a walk that DELETEs it cannot revoke one of its own tokens."""


def url_of(template: str) -> str:
    """``template`` (an OpenAPI path) with each id in it replaced by `UNKNOWN_ID`."""
    for name in ("{model_id}", "{session_id}", "{token_id}"):
        template = template.replace(name, UNKNOWN_ID)
    return template
