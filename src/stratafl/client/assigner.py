"""``POST /assign`` for asyncio: which combiner a client should connect to.

One pooled HTTP client serves every client of a process (a swarm's thousands, or a client
runtime's one); each request carries its own client's token. The controller takes the
client's id from the token (the id in the body is for an ``--insecure`` controller).
"""

from __future__ import annotations

import ssl
from types import TracebackType

import httpx

from stratafl.errors import StrataError
from stratafl.restapi.schema import Assignment, AssignRequest, DiscoveryInfo, IssuedToken
from stratafl.restapi.wire import authorization, error_of, reaching

__all__ = ["ControllerAssigner"]


class ControllerAssigner:
    """Asks the controller at ``controller_url`` for combiners; building it does no I/O,
    entering it (``async with``) opens its connection pool of ``pool``."""

    def __init__(
        self,
        controller_url: str,
        *,
        verify: ssl.SSLContext | bool,
        timeout: float,
        pool: int,
    ) -> None:
        self.controller_url = controller_url.rstrip("/")
        self._verify = verify
        self._timeout = timeout
        self._pool = pool
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> ControllerAssigner:
        self._http = httpx.AsyncClient(
            base_url=f"{self.controller_url}/api/v1",
            timeout=self._timeout,
            verify=self._verify,
            limits=httpx.Limits(max_connections=self._pool, max_keepalive_connections=self._pool),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def assign(
        self,
        client_id: str,
        token: str | None,
        *,
        failed_combiner: str | None,
        preferred_combiner: str | None,
        current_combiner: str | None = None,
    ) -> Assignment:
        """The combiner ``client_id`` should connect to, avoiding ``failed_combiner`` and
        preferring ``preferred_combiner``; the controller's refusal as its `StrataError`."""
        if self._http is None:
            raise StrataError("the assigner is not open: use it as `async with assigner:`")
        body = AssignRequest(
            client_id=client_id,
            failed_combiner=failed_combiner,
            preferred_combiner=preferred_combiner,
            current_combiner=current_combiner,
        )
        with reaching(self.controller_url):
            response = await self._http.post(
                "/assign",
                json=body.model_dump(exclude_none=True),  # a controller that predates a field
                headers=authorization(token),  # still answers
            )
        if response.is_error:
            raise error_of(response)
        return Assignment.model_validate_json(response.content)

    async def token_key(self, token: str | None) -> bytes:
        """The controller's token public key (PEM; empty from an ``--insecure``
        controller): what the round grants of its tasks verify with."""
        if self._http is None:
            raise StrataError("the assigner is not open: use it as `async with assigner:`")
        with reaching(self.controller_url):
            response = await self._http.get("/discovery", headers=authorization(token))
        if response.is_error:
            raise error_of(response)
        return DiscoveryInfo.model_validate_json(response.content).token_public_key_pem.encode()

    async def renew(self, token: str) -> str:
        """A fresh copy of ``token`` (``POST /tokens/renew``); the refusal as its error."""
        if self._http is None:
            raise StrataError("the assigner is not open: use it as `async with assigner:`")
        with reaching(self.controller_url):
            response = await self._http.post("/tokens/renew", headers=authorization(token))
        if response.is_error:
            raise error_of(response)
        return IssuedToken.model_validate_json(response.content).token
