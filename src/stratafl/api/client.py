"""`ControllerClient`: the controller's REST API as typed Python calls.

One method per operation, each returning the records of `stratafl.records` or the bodies of
`stratafl.api.schema`, over one reused ``httpx.Client``. Errors are mapped once, here:

- an error the controller answers with (an `ErrorBody`) becomes the `StrataError` subclass
  it names, with the server's one-line detail as its message (`ERRORS`);
- a connection error or a timeout becomes `UnavailableError`, raised ``from`` the httpx error;
- an answer that does not parse as the expected record becomes `StrataError`.

A fake transport (``httpx.MockTransport``) passed as ``transport`` tests code that uses it
without a network.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import numpy as np
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from stratafl import errors
from stratafl.api.schema import Assignment, AssignRequest, DiscoveryInfo, ErrorBody, Health
from stratafl.modelfile import copy_params_from_file, params_to_bytes
from stratafl.params import Params
from stratafl.records import (
    ClientRecord,
    CombinerRecord,
    EventRecord,
    ModelRecord,
    RoundRecord,
    SessionRecord,
)
from stratafl.settings import SessionConfig

T = TypeVar("T")

ERRORS: dict[str, type[errors.StrataError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.StrataError)
} | {"ValidationError": errors.ConfigError}
"""The exception raised for each ``ErrorBody.error`` name; any other name raises StrataError."""

DOWNLOAD_CHUNK_BYTES = 1 << 20

_HEALTH = TypeAdapter(Health)
_DISCOVERY = TypeAdapter(DiscoveryInfo)
_ASSIGNMENT = TypeAdapter(Assignment)
_COMBINERS = TypeAdapter(list[CombinerRecord])
_CLIENTS = TypeAdapter(list[ClientRecord])
_MODEL = TypeAdapter(ModelRecord)
_MODELS = TypeAdapter(list[ModelRecord])
_SESSION = TypeAdapter(SessionRecord)
_SESSIONS = TypeAdapter(list[SessionRecord])
_ROUNDS = TypeAdapter(list[RoundRecord])
_EVENTS = TypeAdapter(list[EventRecord])


class ControllerClient:
    """A client of one controller's REST API; use it as a context manager, or `close()` it.

    ``url`` is the controller's base URL (``http://127.0.0.1:8080``). Building the client
    does no I/O; each call is one request (or one streamed transfer) with ``timeout``.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise errors.ConfigError(
                f"controller URL {url!r} must start with http:// or https://, "
                "e.g. http://127.0.0.1:8080"
            )
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=f"{self.url}/api/v1", timeout=timeout, transport=transport
        )

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

    def assign(self, client_id: str, failed_combiner: str | None = None) -> Assignment:
        """The combiner ``client_id`` should connect to, avoiding ``failed_combiner``."""
        body = AssignRequest(client_id=client_id, failed_combiner=failed_combiner)
        return self._call(_ASSIGNMENT, "POST", "/assign", json=body.model_dump())

    def combiners(self) -> list[CombinerRecord]:
        """Every combiner that ever registered, online or offline."""
        return self._call(_COMBINERS, "GET", "/combiners")

    def clients(self) -> list[ClientRecord]:
        """Every client that ever asked for a combiner, and where it is now."""
        return self._call(_CLIENTS, "GET", "/clients")

    # -- models -------------------------------------------------------------------------

    def upload_model(self, params: Mapping[str, np.ndarray]) -> ModelRecord:
        """Store ``params`` as a seed model (the newest model seeds the next session)."""
        return self._call(_MODEL, "POST", "/models", content=params_to_bytes(params))

    def upload_model_file(self, path: Path) -> ModelRecord:
        """Store a safetensors file as a seed model, streamed from disk."""
        with open(path, "rb") as stream:
            return self._call(_MODEL, "POST", "/models", content=stream)

    def models(self, session_id: str | None = None) -> list[ModelRecord]:
        """Every stored model, or those a session made."""
        query = {} if session_id is None else {"session_id": session_id}
        return self._call(_MODELS, "GET", "/models", params=query)

    def model(self, model_id: str) -> ModelRecord:
        return self._call(_MODEL, "GET", f"/models/{_segment(model_id)}")

    def trail(self, model_id: str) -> list[ModelRecord]:
        """The model and its ancestors, newest first: the seed model is last."""
        return self._call(_MODELS, "GET", f"/models/{_segment(model_id)}/trail")

    def download_model(self, model_id: str, path: Path) -> Path:
        """Stream a model's safetensors file to ``path``; returns ``path``.

        The bytes go to a temporary name beside ``path`` that is renamed once complete, so
        ``path`` never holds half a model.
        """
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with (
                _reaching(self.url),
                self._http.stream("GET", f"/models/{_segment(model_id)}/download") as response,
            ):
                if response.is_error:
                    response.read()
                    raise _error_of(response)
                with open(partial, "wb") as out:
                    for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
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

    def start_session(self, config: SessionConfig) -> SessionRecord:
        """Start a session; it runs on the controller, follow it with `session`."""
        return self._call(_SESSION, "POST", "/sessions", json=config.model_dump(mode="json"))

    def session(self, session_id: str) -> SessionRecord:
        return self._call(_SESSION, "GET", f"/sessions/{_segment(session_id)}")

    def sessions(self) -> list[SessionRecord]:
        """Every session, oldest first."""
        return self._call(_SESSIONS, "GET", "/sessions")

    def rounds(self, session_id: str) -> list[RoundRecord]:
        """A session's rounds so far, in order; each is recorded once it ends."""
        return self._call(_ROUNDS, "GET", f"/sessions/{_segment(session_id)}/rounds")

    def events(self, limit: int = 200) -> list[EventRecord]:
        """The newest ``limit`` events, newest last."""
        return self._call(_EVENTS, "GET", "/events", params={"limit": limit})

    # -- the one place requests are sent and errors mapped ------------------------------

    def _call(self, answer: TypeAdapter[T], method: str, path: str, **kwargs: Any) -> T:
        with _reaching(self.url):
            response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise _error_of(response)
        try:
            return answer.validate_json(response.content)
        except PydanticValidationError as exc:
            raise errors.StrataError(
                f"the controller at {self.url} answered {method} {path} with a body stratafl "
                f"cannot read ({exc.error_count()} errors, first: {exc.errors()[0]['msg']}); "
                "are the controller and this client the same stratafl version?"
            ) from exc


def _segment(value: str) -> str:
    """An id as one path segment: a ``/`` or ``?`` in it cannot reach another endpoint."""
    return urllib.parse.quote(value, safe="")


@contextlib.contextmanager
def _reaching(url: str) -> Iterator[None]:
    """Turns httpx's transport errors (refused, reset, timed out) into UnavailableError."""
    try:
        yield
    except httpx.TransportError as exc:
        raise errors.UnavailableError(
            f"cannot reach the controller at {url}: {str(exc) or type(exc).__name__}; "
            "is `strata controller start` running?"
        ) from exc


def _error_of(response: httpx.Response) -> errors.StrataError:
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
    return ERRORS.get(body.error, errors.StrataError)(body.detail)
