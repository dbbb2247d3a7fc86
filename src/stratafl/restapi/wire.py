"""How `ControllerClient` speaks HTTP: credentials, TLS, paths, and every failure mapped
to a domain error once.

- an error the controller answers with (an `ErrorBody`) becomes the `StrataError` subclass
  it names, with the server's one-line detail as its message (`ERRORS`);
- a connection error or a timeout becomes `UnavailableError`, raised ``from`` the httpx error.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
from pydantic import ValidationError as PydanticValidationError

from stratafl import errors
from stratafl.restapi.schema import ErrorBody

__all__ = [
    "ERRORS",
    "Verify",
    "authorization",
    "error_of",
    "reaching",
    "segment",
    "tls",
]

ERRORS: dict[str, type[errors.StrataError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.StrataError)
} | {"ValidationError": errors.ConfigError}
"""The exception raised for each ``ErrorBody.error`` name; any other name raises StrataError."""

Verify = bool | str | Path | ssl.SSLContext
"""How to check the controller's TLS certificate: True (the system's CAs), a CA file (the
federation's ``ca.crt``), an SSL context, or False (never, outside tests)."""


def authorization(token: str | None) -> dict[str, str]:
    """The bearer header; a token that cannot be one header line is refused here."""
    if token is None:
        return {}
    token = token.strip()
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        raise errors.ConfigError(
            "the token must be one line of printable ASCII; pass it exactly as "
            "`strata token create` printed it"
        )
    return {"Authorization": f"Bearer {token}"}


def tls(verify: Verify) -> ssl.SSLContext | bool:
    """httpx's ``verify``: a CA file becomes an SSL context (httpx deprecates paths)."""
    if isinstance(verify, bool | ssl.SSLContext):
        return verify
    try:
        return ssl.create_default_context(cafile=os.fspath(verify))
    except (OSError, ssl.SSLError) as exc:
        raise errors.ConfigError(
            f"cannot load the CA certificate {os.fspath(verify)!r} ({exc}); pass the "
            "federation's ca.crt (the controller's trust/ca.crt, or /discovery's ca_pem)"
        ) from exc


def segment(value: str) -> str:
    """An id as one path segment: a ``/`` or ``?`` in it cannot reach another endpoint."""
    return urllib.parse.quote(value, safe="")


SECURE_DEFAULT = (
    "a controller started without --insecure serves HTTPS with its own CA and wants a "
    "token: use https://, verify=<its trust/ca.crt> and token=<its trust/admin.token> "
    "(or ControllerClient.from_environment())"
)


@contextlib.contextmanager
def reaching(url: str) -> Iterator[None]:
    """Turns httpx's transport errors (refused, reset, timed out) into UnavailableError,
    saying what to pass when the cause is the secure default (HTTPS, the federation's CA)."""
    try:
        yield
    except httpx.TransportError as exc:
        said = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in said:
            raise errors.UnavailableError(
                f"the controller at {url} has a certificate this client cannot verify; "
                "pass the federation's CA as verify=<the controller's trust/ca.crt> "
                "(STRATA_CA_FILE, or --ca-file)"
            ) from exc
        if url.startswith("http://") and isinstance(
            exc, httpx.RemoteProtocolError | httpx.ReadError
        ):
            raise errors.UnavailableError(
                f"the controller at {url} did not answer plain HTTP ({said}); {SECURE_DEFAULT}"
            ) from exc
        raise errors.UnavailableError(
            f"cannot reach the controller at {url}: {said}; is `strata controller start` running?"
        ) from exc


def error_of(response: httpx.Response) -> errors.StrataError:
    """The domain error an error answer stands for."""
    try:
        body = ErrorBody.model_validate_json(response.content)
    except PydanticValidationError:
        request = response.request
        detail = (
            f"{request.method} {request.url.path} failed with HTTP {response.status_code}: "
            f"{response.text[:300]}"
        )
        if response.status_code in (502, 503, 504):  # a proxy in front of a stopped controller
            return errors.UnavailableError(detail)
        return errors.StrataError(detail)
    error = ERRORS.get(body.error, errors.StrataError)(body.detail)
    if isinstance(error, errors.RateLimited):
        try:
            error.retry_after = float(response.headers.get("retry-after", "1"))
        except ValueError:
            pass
    return error
