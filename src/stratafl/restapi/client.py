"""`ControllerClient`: the controller's REST API as typed Python calls.

One method per operation, each returning the records of `stratafl.records` or the bodies of
`stratafl.restapi.schema`, over one reused ``httpx.Client``. Errors are mapped once, in
`stratafl.restapi.wire` (an error answer becomes the domain error it names, an unreachable
controller `UnavailableError`); an answer that does not parse as the expected record is a
`StrataError`. A controller that is not ``--insecure`` (the default) wants a token
(``token``, sent as ``Authorization: Bearer``) and serves HTTPS with the federation's CA
(``verify``): `ControllerClient.from_environment` finds all three where `strata` does
(``STRATA_*`` variables, the config file). A fake transport (``httpx.MockTransport``)
passed as ``transport`` tests code without a network.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import numpy as np
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from stratafl import errors
from stratafl.modelfile.codec import copy_params_from_file, params_to_bytes
from stratafl.params import Params
from stratafl.records import (
    SESSION_END_KINDS,
    AppRecord,
    EventRecord,
    ModelRecord,
    PromiseRecord,
    TokenRecord,
)
from stratafl.restapi.environment import resolve_connection
from stratafl.restapi.events import EventFollower
from stratafl.restapi.pages import Listings
from stratafl.restapi.schema import (
    Assignment,
    AssignRequest,
    CertificateRequest,
    DiscoveryInfo,
    Health,
    IssuedRole,
    IssuedToken,
    Session,
    SignedCertificate,
    TokenRequest,
)
from stratafl.restapi.wire import ERRORS, Verify, authorization, error_of, reaching, segment, tls
from stratafl.security.files import read_token
from stratafl.settings import APP_FILE_PATTERN, SessionConfig
from stratafl.status import SessionStatus

__all__ = ["ERRORS", "ControllerClient", "Verify"]

T = TypeVar("T")

DOWNLOAD_CHUNK_BYTES = 1 << 20
WHAT_TO_PASS = (
    "From Python: ControllerClient(url, token=..., verify=<the controller's trust/ca.crt>), "
    "or ControllerClient.from_environment() to use what `strata` uses (STRATA_CONTROLLER, "
    "STRATA_TOKEN_FILE, STRATA_CA_FILE or the config file)."
)
"""What a client without a token is told when the controller asks for one."""

_HEALTH = TypeAdapter(Health)
_DISCOVERY = TypeAdapter(DiscoveryInfo)
_ASSIGNMENT = TypeAdapter(Assignment)
_MODEL = TypeAdapter(ModelRecord)
_APP = TypeAdapter(AppRecord)
_APPS = TypeAdapter(list[AppRecord])
_SESSION = TypeAdapter(Session)
_ISSUED = TypeAdapter(IssuedToken)
_TOKEN = TypeAdapter(TokenRecord)
_CERTIFICATE = TypeAdapter(SignedCertificate)


class ControllerClient(Listings):
    """A client of one controller's REST API; use it as a context manager, or `close()` it.

    Every list comes three ways (`stratafl.restapi.pages`): ``<list>_page`` (one page and its
    cursor), ``iter_<list>`` (every record, lazily) and ``<list>(limit=None)`` (a list).

    ``url`` is the controller's base URL (``https://127.0.0.1:8080``); ``token`` the
    caller's bearer token (the controller's ``trust/admin.token``, or one from `strata
    token create`); ``verify`` how to check an https controller (see `Verify`: the
    federation's CA, the controller's ``trust/ca.crt``). Building the client does no
    network I/O (a CA file given as ``verify`` is read here); each call is one request (or
    one streamed transfer) with ``timeout``. `from_environment` finds all three as the
    `strata` commands do.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        verify: Verify = True,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise errors.ConfigError(
                f"controller URL {url!r} must start with http:// or https://, "
                "e.g. http://127.0.0.1:8080"
            )
        self.url = url.rstrip("/")
        self._has_token = token is not None
        self._http = httpx.Client(
            base_url=f"{self.url}/api/v1",
            timeout=timeout,
            transport=transport,
            headers=authorization(token),
            verify=tls(verify),
        )

    @classmethod
    def from_environment(
        cls,
        url: str | None = None,
        *,
        token: str | None = None,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        config_file: Path | None = None,
        profile: str | None = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> ControllerClient:
        """A client of the controller `strata` would call from this shell: each argument
        given wins, then ``STRATA_CONTROLLER``, ``STRATA_TOKEN`` or ``STRATA_TOKEN_FILE``
        and ``STRATA_CA_FILE``, then the config file (``config_file``, else
        ``STRATA_CONFIG``, else ``~/.config/stratafl/config.toml``; its ``[profiles.NAME]``
        by ``profile`` or ``STRATA_PROFILE``). See `stratafl.restapi.environment`."""
        where = resolve_connection(
            controller=url,
            token=token,
            token_file=token_file,
            ca_file=ca_file,
            config_file=config_file,
            profile=profile,
            environ=os.environ if environ is None else environ,
        )
        secret = where.token
        if secret is None and where.token_file is not None:
            secret = read_token(where.token_file)
        return cls(where.controller, token=secret, verify=where.ca_file or True, timeout=timeout)

    def close(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        self._http.close()

    def __enter__(self) -> ControllerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ControllerClient({self.url!r})"

    # -- discovery ----------------------------------------------------------------------

    def health(self) -> Health:
        """Liveness: answers as soon as the controller serves its REST API."""
        return self._call(_HEALTH, "GET", "/health")

    def discovery(self) -> DiscoveryInfo:
        """Where combiners reach the controller's gRPC service."""
        return self._call(_DISCOVERY, "GET", "/discovery")

    def assign(
        self,
        client_id: str | None = None,
        failed_combiner: str | None = None,
        preferred_combiner: str | None = None,
    ) -> Assignment:
        """The combiner this client should connect to, avoiding ``failed_combiner`` and
        preferring ``preferred_combiner`` (honoured while it is online and has room).

        The controller takes the client's id from its token; ``client_id`` may be left out
        (it must match the token's) and is needed only by an ``--insecure`` controller.
        """
        body = AssignRequest(
            client_id=client_id,
            failed_combiner=failed_combiner,
            preferred_combiner=preferred_combiner,
        )
        # Unset fields stay off the wire: a controller that predates one still answers.
        return self._call(_ASSIGNMENT, "POST", "/assign", json=body.model_dump(exclude_none=True))

    def request_certificate(self, csr_pem: bytes, hosts: Sequence[str] = ()) -> SignedCertificate:
        """A TLS certificate for the key of ``csr_pem``, named after this client's token
        subject, with the federation's CA; only a combiner may name ``hosts``."""
        body = CertificateRequest(csr_pem=csr_pem.decode("ascii"), hosts=list(hosts))
        return self._call(_CERTIFICATE, "POST", "/certificates", json=body.model_dump())

    # -- models -------------------------------------------------------------------------

    def upload_model(self, params: Mapping[str, np.ndarray]) -> ModelRecord:
        """Store ``params`` as a seed model (the newest model seeds the next session)."""
        return self._call(_MODEL, "POST", "/models", content=params_to_bytes(params))

    def upload_model_file(self, path: Path) -> ModelRecord:
        """Store a safetensors file as a seed model, streamed from disk."""
        with open(path, "rb") as stream:
            return self._call(_MODEL, "POST", "/models", content=stream)

    def model(self, model_id: str) -> ModelRecord:
        return self._call(_MODEL, "GET", f"/models/{segment(model_id)}")

    def download_model(self, model_id: str, path: Path) -> Path:
        """Stream a model's safetensors file to ``path``; returns ``path``.

        The bytes go to a temporary name beside ``path`` that is renamed once complete, so
        ``path`` never holds half a model.
        """
        return self._download(f"/models/{segment(model_id)}/download", path)

    def publish_app(self, path: Path) -> AppRecord:
        """Publish an app package (a wheel, ``.tar.gz`` or ``.zip``), streamed from disk;
        the answer names its SHA-256, which a session's ``app_sha256`` takes."""
        with open(path, "rb") as stream:
            params = {"filename": path.name}
            return self._call(_APP, "POST", "/apps", content=stream, params=params)

    def apps(self) -> list[AppRecord]:
        """Every app package the controller holds."""
        return self._call(_APPS, "GET", "/apps")

    def download_app(self, sha256: str, folder: Path, *, limit: int) -> Path:
        """Stream an app package into ``folder`` under the file name the controller gives
        (pip reads a wheel's from it), complete or not at all, refusing more than ``limit``
        bytes; returns its path. A client gets only the running session's package; the
        caller checks the bytes against the digest."""
        url = f"/apps/{segment(sha256)}/download"
        return self._download(url, folder / f"{sha256}.download", limit=limit, named=True)

    def _download(
        self, url: str, path: Path, *, limit: int | None = None, named: bool = False
    ) -> Path:
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with reaching(self.url), self._http.stream("GET", url) as response:
                if response.is_error:
                    response.read()
                    raise error_of(response)
                if named:
                    path = path.with_name(_attachment_name(response, url))
                received = 0
                with open(partial, "wb") as out:
                    for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                        received += len(chunk)
                        if limit is not None and received > limit:
                            raise errors.PermissionDenied(
                                f"{url} sent more than {limit} bytes; the limit is {limit}"
                            )
                        out.write(chunk)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    def download_params(self, model_id: str) -> Params:
        """A stored model's arrays, in memory (through a temporary file)."""
        with tempfile.TemporaryDirectory(prefix="strata-download-") as folder:
            return copy_params_from_file(
                self.download_model(model_id, Path(folder) / "model.safetensors")
            )

    # -- sessions -----------------------------------------------------------------------

    def start_session(self, config: SessionConfig) -> Session:
        """Start a session; it runs on the controller, follow it with `session`."""
        return self._call(_SESSION, "POST", "/sessions", json=config.model_dump(mode="json"))

    def session(self, session_id: str) -> Session:
        return self._call(_SESSION, "GET", f"/sessions/{segment(session_id)}")

    def record_promise(self, session_id: str, promise: PromiseRecord) -> Session:
        """Store a session's promise check (``PromiseRecord.model_validate(check)`` turns a
        `stratafl.launch.report.PromiseCheck` into one)."""
        path = f"/sessions/{segment(session_id)}/promise"
        return self._call(_SESSION, "PUT", path, json=promise.model_dump(mode="json"))

    def follow(self, session_id: str, after: int | None = None) -> Iterator[EventRecord]:
        """The session's events as they are recorded (those after the event id ``after``
        first), until its end event (``session_finished``, ``_stopped``, ``_cancelled`` or
        ``_failed``); a dropped connection is resumed where it stopped."""
        self.session(session_id)  # an unknown session raises NotFoundError here
        follower = EventFollower(
            self._http,
            self.url,
            f"/sessions/{segment(session_id)}/events/stream",
            ends=lambda event: event.kind in SESSION_END_KINDS,
            ended=lambda: self.session(session_id).status != SessionStatus.RUNNING,
        )
        return follower.follow(after)

    def follow_events(self, after: int | None = None) -> Iterator[EventRecord]:
        """Every event as it is recorded (those after the id ``after`` first); never ends."""
        follower = EventFollower(
            self._http, self.url, "/events/stream", ends=lambda _: False, ended=lambda: False
        )
        return follower.follow(after)

    def stop_session(self, session_id: str) -> Session:
        """End a running session after the round in flight."""
        return self._call(_SESSION, "POST", f"/sessions/{segment(session_id)}/stop")

    def cancel_session(self, session_id: str) -> Session:
        """End a running session now; the round in flight is dropped."""
        return self._call(_SESSION, "POST", f"/sessions/{segment(session_id)}/cancel")

    # -- tokens (admins) ----------------------------------------------------------------

    def create_token(
        self,
        name: str,
        role: IssuedRole,
        *,
        subject: str | None = None,
        ttl_seconds: float | None = None,
        max_examples: int | None = None,
        hosts: Sequence[str] = (),
    ) -> IssuedToken:
        """A new token for ``subject`` (default: ``name``); the answer is its only copy.
        ``ttl_seconds`` defaults by role on the controller; ``hosts`` are a combiner's
        certificate hosts."""
        body = TokenRequest(
            name=name,
            role=role,
            subject=subject,
            ttl_seconds=ttl_seconds,
            max_examples=max_examples,
            hosts=list(hosts),
        )
        return self._call(_ISSUED, "POST", "/tokens", json=body.model_dump(mode="json"))

    def renew_token(self) -> IssuedToken:
        """A fresh copy of this client's own token (same id and claims, a new expiry)."""
        return self._call(_ISSUED, "POST", "/tokens/renew")

    def revoke_token(self, token_id: str) -> TokenRecord:
        """Revoke a token by its id (``TokenRecord.token_id``)."""
        return self._call(_TOKEN, "DELETE", f"/tokens/{segment(token_id)}")

    # -- the one place requests are sent and errors mapped ------------------------------

    def _call(self, answer: TypeAdapter[T], method: str, path: str, **kwargs: Any) -> T:
        with reaching(self.url):
            response = self._http.request(method, path, **kwargs)
        if response.is_error:
            error = error_of(response)
            if response.status_code == 401 and not self._has_token:
                raise errors.AuthError(f"{error} {WHAT_TO_PASS}")
            raise error
        try:
            return answer.validate_json(response.content)
        except PydanticValidationError as exc:
            raise errors.StrataError(
                f"the controller at {self.url} answered {method} {path} with a body stratafl "
                f"cannot read ({exc.error_count()} errors, first: {exc.errors()[0]['msg']}); "
                "are the controller and this client the same stratafl version?"
            ) from exc


def _attachment_name(response: httpx.Response, url: str) -> str:
    """The file name of a ``Content-Disposition: attachment; filename="..."`` answer, if
    it is a package's name (no folder, a wheel or an archive)."""
    disposition = response.headers.get("content-disposition", "")
    name = disposition.partition('filename="')[2].rstrip('"')
    if not re.fullmatch(APP_FILE_PATTERN, name):
        raise errors.ModelFormatError(
            f"{url} names no package file ({disposition!r}); is the controller a stratafl one?"
        )
    return name
