"""``GET /metrics`` for a tier with no HTTP API (a combiner, a client): its Prometheus
metrics on a port of its own.

A small HTTP/1.1 server on asyncio streams in the tier's event loop (where the registry's
gauges read the tier's live state): one request per connection, answered and closed. On
a secured federation it admits the roles `REST_ROLES` lists for ``GET /metrics``
(admins), their tokens checked with the token key (and, at a combiner, the revocations)
the tier already holds, and it speaks TLS with the tier's certificate: a combiner's own
(the one its gRPC server presents, swapped after a re-enrolment from the next
connection on), a client's organisation certificate if it has one. A client without a
certificate serves plain HTTP on loopback only, tokens still checked. An ``--insecure``
tier (loopback only) serves plain HTTP to anyone, as the controller's REST API does then.

Every request is bounded (headers, time, connections at once) and every refusal is an
`ErrorBody` JSON, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from stratafl.errors import AuthError, ConfigError, NotFoundError, PermissionDenied
from stratafl.observe.metrics import CONTENT_TYPE, exposition
from stratafl.restapi.schema import ErrorBody
from stratafl.security import Claims, TlsIdentity
from stratafl.security.policy import REST_ROLES
from stratafl.transport.auth import check_caller
from stratafl.transport.credentials import is_loopback

__all__ = ["MAX_CONNECTIONS", "MAX_HEADER_BYTES", "MetricsServer"]

log = logging.getLogger("stratafl.observe")

PATH = "/metrics"
MAX_HEADER_BYTES = 16 * 1024
IO_SECONDS = 10.0
"""The longest a peer may take to send its request, or to read the answer."""
MAX_CONNECTIONS = 16
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
}
_ERRORS = {AuthError: 401, PermissionDenied: 403, NotFoundError: 404}


class MetricsServer:
    """Serves ``registry``; constructing it starts nothing.

    ``verify`` checks a bearer token and ``identity`` gives the certificate to present:
    both None for an insecure tier; ``verify`` alone serves plain HTTP with tokens, on
    loopback only (`start` refuses any other host).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        verify: Callable[[str], Claims] | None = None,
        identity: Callable[[], TlsIdentity] | None = None,
    ) -> None:
        if identity is not None and verify is None:
            raise ConfigError("a metrics server that speaks TLS checks tokens too")
        self._registry = registry
        self._verify = verify
        self._identity = identity
        self._presented: TlsIdentity | None = None
        self._tls: ssl.SSLContext | None = None
        self._open = 0
        self._server: asyncio.Server | None = None

    @property
    def scheme(self) -> str:
        return "http" if self._identity is None else "https"

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: a free port); returns the port."""
        if self._identity is None and self._verify is not None and not is_loopback(host):
            raise ConfigError(
                f"metrics without a certificate are served on loopback only, not {host}: "
                "give this tier a certificate (--tls-cert, --tls-key) to serve them elsewhere"
            )
        if self._identity is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
            self._present_current()
        self._server = await asyncio.start_server(
            self._handle,
            host,
            port,
            limit=MAX_HEADER_BYTES,
            ssl=self._tls,
            ssl_handshake_timeout=IO_SECONDS if self._tls else None,
        )
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), IO_SECONDS)

    def _present_current(self) -> None:
        """Load the tier's current certificate into the TLS context if it changed
        (Python loads a key only from a file: it lives a moment in a private folder)."""
        assert self._identity is not None and self._tls is not None
        identity = self._identity()
        if identity is self._presented:
            return
        with tempfile.TemporaryDirectory(prefix="strata-metrics-") as folder:
            paths = identity.write(Path(folder), "metrics")
            self._tls.load_cert_chain(paths.cert, paths.key)
        self._presented = identity

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open <= MAX_CONNECTIONS:
                async with asyncio.timeout(IO_SECONDS):
                    head = await reader.readuntil(b"\r\n\r\n")
                    status, headers, body = self._answer(head)
                    writer.write(_response(status, headers, body))
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError):
            pass  # the peer went away or was too slow: nothing to answer
        except asyncio.LimitOverrunError:
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                writer.write(_error(400, "RequestTooLarge", "request headers over 16 KiB"))
        finally:
            self._open -= 1
            if self._tls is not None:
                self._present_current()  # a re-enrolment's certificate, from now on
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), IO_SECONDS)

    def _answer(self, head: bytes) -> tuple[int, dict[str, str], bytes]:
        """The answer to one request head: the metrics, or an error as an `ErrorBody`."""
        lines = head.decode("latin-1").split("\r\n")
        request = lines[0].split(" ")
        if len(request) != 3 or not request[2].startswith("HTTP/1."):
            return 400, {}, _body("BadRequest", "send `GET /metrics HTTP/1.1`")
        method, target = request[0], request[1].split("?", 1)[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        try:
            if target != PATH:
                raise NotFoundError(f"{target[:200]} is not served here; scrape {PATH}")
            if method != "GET":
                return 405, {"Allow": "GET"}, _body("MethodNotAllowed", f"{PATH} takes GET")
            if self._verify is not None:
                token = _bearer(headers.get("authorization"))
                check_caller(token, REST_ROLES[("GET", PATH)], self._verify)
        except (AuthError, PermissionDenied, NotFoundError) as exc:
            status = _ERRORS[type(exc)]
            extra = {"WWW-Authenticate": 'Bearer realm="stratafl"'} if status == 401 else {}
            return status, extra, _body(type(exc).__name__, str(exc))
        return 200, {"Content-Type": CONTENT_TYPE}, exposition(self._registry)


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be `Bearer <token>`")
    return token.strip()


def _body(error: str, detail: str) -> bytes:
    return ErrorBody(error=error, detail=detail).model_dump_json().encode()


def _error(status: int, error: str, detail: str) -> bytes:
    return _response(status, {}, _body(error, detail))


def _response(status: int, headers: dict[str, str], body: bytes) -> bytes:
    fields = {"Content-Type": "application/json", **headers}
    fields["Content-Length"] = str(len(body))
    fields["Connection"] = "close"
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"HTTP/1.1 {status} {_REASONS[status]}\r\n{head}\r\n".encode("latin-1") + body
