"""How `ControllerClient` speaks HTTP: credentials, TLS, paths, and every failure mapped
to a domain error once.

- an error the controller answers with (an `ErrorBody`) becomes the `StrataError` subclass
  it names, with the server's one-line detail as its message (`ERRORS`);
- a connection error or a timeout becomes `UnavailableError`, raised ``from`` the httpx error;
- a link that can never work as configured becomes `ConfigError`, so no caller retries it:
  a certificate the trusted CAs do not verify, ``https://`` to a plain-HTTP controller, or
  ``http://`` to one that speaks TLS (told apart from a dropped connection by one TLS
  handshake with the same address).
"""

from __future__ import annotations

import contextlib
import os
import socket
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
    "misconfigured",
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
    and those no retry can mend into ConfigError (`misconfigured`), saying what to pass when
    the cause is the secure default (HTTPS, the federation's CA)."""
    try:
        yield
    except httpx.TransportError as exc:
        wrong = misconfigured(url, exc)
        if wrong is not None:
            raise wrong from exc
        said = str(exc) or type(exc).__name__
        raise errors.UnavailableError(
            f"cannot reach the controller at {url}: {said}; is `strata controller start` running?"
        ) from exc


TLS_PROBE_SECONDS = 3.0


def misconfigured(url: str, exc: httpx.TransportError) -> errors.ConfigError | None:
    """The setting to fix when ``exc`` shows the link cannot work as configured (the CA,
    or the URL's scheme); None for what may pass (refused, reset, timed out)."""
    parsed = urllib.parse.urlsplit(url)
    where = parsed.netloc
    for link in _chain(exc):
        if isinstance(link, ssl.SSLCertVerificationError):
            return errors.ConfigError(
                f"the controller at {url} presented a certificate that the CAs this process "
                f"trusts do not verify ({link.verify_message or link.reason}); pass the CA "
                "that signed it: --ca-file (the federation's trust/ca.crt) or --ca-bundle "
                "(an organisation's CA bundle), or fix the host name in the URL; in Python, "
                "verify=<the controller's trust/ca.crt> (or ControllerClient.from_environment())"
            )
        if isinstance(link, ssl.SSLError) and link.reason == "WRONG_VERSION_NUMBER":
            return errors.ConfigError(
                f"the controller at {url} does not speak TLS (it runs --insecure); use "
                f"http://{where}, or start the controller without --insecure"
            )
    dropped = isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError)
    if dropped and parsed.scheme == "http" and _speaks_tls(parsed.hostname, parsed.port):
        return errors.ConfigError(
            f"the controller at {url} speaks HTTPS; use https://{where} (with --ca-file or "
            f"--ca-bundle for its certificate); {SECURE_DEFAULT}"
        )
    return None


def _speaks_tls(host: str | None, port: int | None) -> bool:
    """True if ``host:port`` completes a TLS handshake (its certificate unchecked: this
    only tells which protocol the server speaks)."""
    if host is None:
        return False
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port or 80), timeout=TLS_PROBE_SECONDS) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except OSError:  # ssl.SSLError too: it is an OSError
        return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, once each."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


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
