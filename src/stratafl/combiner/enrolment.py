"""What a combiner learns from the controller before it serves, and learns again later.

A combiner enrols over REST: ``/discovery`` says where the controller's gRPC service is
and which token key and CA the federation uses; ``/certificates`` signs this combiner a
TLS certificate for the name it is reached at. None of that is fixed for the combiner's
lifetime: a restarted controller may listen on another gRPC port, and a controller whose
trust was made anew has another CA and token key. So enrolling is a function the
combiner calls at start and again whenever it has lost the controller, and what its
server checks callers with (`ServingTrust`) can be swapped while it serves: the next TLS
handshake and the next call use the new certificate and key, and no client is dropped.

The token and CA files are read at every attempt, so an operator who hands a combiner a
new token or CA file does not have to restart it. A combiner that brings its
organisation's certificate (`OwnCertificate`) asks for none: it serves that one, read
anew at each enrolment (a renewed pair is served from the next handshake on).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import grpc

from stratafl.errors import AuthError, ConfigError, StrataError, UnavailableError
from stratafl.restapi import ControllerClient
from stratafl.restapi.schema import DiscoveryInfo
from stratafl.security import (
    Claims,
    Role,
    TlsIdentity,
    TokenVerifier,
    certificate_request,
    read_claims_unverified,
)
from stratafl.security.own import OwnCertificate
from stratafl.security.renewal import keep_renewed_token
from stratafl.transport.backoff import Backoff
from stratafl.transport.credentials import INSECURE, PeerCredentials

log = logging.getLogger("stratafl.combiner")

REST_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, kw_only=True)
class Enrolment:
    """One enrolment's outcome: where the controller is and what this combiner holds."""

    combiner_id: str
    grpc_address: str
    """The controller's gRPC service, as its ``/discovery`` announced it."""
    dialing: PeerCredentials
    """How this combiner calls the controller (its token, the CA, its own certificate)."""
    identity: TlsIdentity | None = None
    """This combiner's server certificate; None on an insecure federation."""
    token_key_pem: str = ""
    """The key clients' tokens are signed with, as ``/discovery`` gave it."""
    ca_pem: str = ""

    def matches(self, info: DiscoveryInfo) -> bool:
        """True if ``info`` keeps this enrolment's token key and CA (the certificate and
        the verifier still hold); otherwise the combiner must enrol anew."""
        return (info.token_public_key_pem, info.ca_pem) == (self.token_key_pem, self.ca_pem)


@dataclass(frozen=True, kw_only=True)
class EnrolmentPlan:
    """What every enrolment of one combiner process asks for."""

    controller: str
    combiner_id: str
    hosts: Sequence[str]
    """The names its certificate carries: the advertised one first."""
    token_file: Path | None = None
    ca_file: Path | None = None
    ca_bundle: Path | None = None
    """An organisation's CA bundle, trusted beside (or instead of) ``ca_file``."""
    own: OwnCertificate | None = None
    """The organisation's certificate this combiner serves, instead of one the
    controller signs."""
    insecure: bool = False

    def credentials(self) -> PeerCredentials:
        """The token and CA files, read now; the token must still name this combiner."""
        if self.insecure:
            return INSECURE
        dialing = PeerCredentials.from_files(
            self.token_file, self.ca_file, "combiner", ca_bundle=self.ca_bundle
        )
        assert dialing.token is not None
        subject = read_claims_unverified(dialing.token).subject
        if subject != self.combiner_id:
            raise ConfigError(
                f"the token in {self.token_file} names combiner {subject!r}, not "
                f"{self.combiner_id!r}; put this combiner's own token back, or restart it"
            )
        return dialing

    def enrol(self, current: Enrolment | None = None) -> Enrolment:
        """One attempt: discovery, and a new certificate unless ``current`` still holds.

        Raises `UnavailableError` while the controller cannot be reached, and another
        `StrataError` when it refuses (a revoked token, a CA that does not match).
        """
        dialing = self.credentials()
        with ControllerClient(
            self.controller,
            timeout=REST_TIMEOUT_SECONDS,
            token=dialing.token,
            verify=dialing.http_verify(),
        ) as controller:
            info = controller.discovery()
            if self.insecure:
                return Enrolment(
                    combiner_id=self.combiner_id, grpc_address=info.grpc_address, dialing=dialing
                )
            if self.own is not None:
                assert dialing.ca_pem is not None
                identity = self.own.identity(dialing.ca_pem, host=self.hosts[0])
            elif current is not None and current.identity is not None and current.matches(info):
                return replace(
                    current,
                    grpc_address=info.grpc_address,
                    dialing=dialing.with_identity(current.identity),
                )
            else:
                csr, key = certificate_request(self.combiner_id, self.hosts)
                signed = controller.request_certificate(csr, self.hosts)
                identity = TlsIdentity(signed.certificate_pem.encode(), key, signed.ca_pem.encode())
        return Enrolment(
            combiner_id=self.combiner_id,
            grpc_address=info.grpc_address,
            dialing=dialing.with_identity(identity),
            identity=identity,
            token_key_pem=info.token_public_key_pem,
            ca_pem=info.ca_pem,
        )

    def renew(self, dialing: PeerCredentials) -> PeerCredentials:
        """``dialing`` with a fresh copy of its token (``POST /tokens/renew``), also written
        to the token file (mode 0600) so a restart finds the fresh one."""
        with ControllerClient(
            self.controller,
            timeout=REST_TIMEOUT_SECONDS,
            token=dialing.token,
            verify=dialing.http_verify(),
        ) as controller:
            token = controller.renew_token().token
        if self.token_file is not None:
            keep_renewed_token(self.token_file, token)
        return dialing.with_token(token)


def combiner_id_of(
    *,
    insecure: bool,
    combiner_id: str | None,
    token_file: Path | None,
    ca_file: Path | None,
    ca_bundle: Path | None = None,
) -> str:
    """The combiner's id for its whole life: its token's subject (``--id`` must match),
    or on an insecure federation ``--id`` or a random one."""
    if insecure:
        return combiner_id or f"combiner-{uuid.uuid4().hex[:8]}"
    dialing = PeerCredentials.from_files(token_file, ca_file, "combiner", ca_bundle=ca_bundle)
    assert dialing.token is not None
    subject = read_claims_unverified(dialing.token).subject
    if combiner_id and combiner_id != subject:
        raise ConfigError(
            f"--id {combiner_id} differs from the token's combiner {subject!r}; "
            "drop --id (a combiner's id is its token's subject)"
        )
    return subject


async def enrol_when_reachable(
    attempt: Callable[[], Enrolment],
    stop: asyncio.Event,
    backoff: Backoff,
    *,
    retry_refusals: bool,
) -> Enrolment | None:
    """Call ``attempt`` until it succeeds (None if ``stop`` is set first), waiting with
    ``backoff`` in between (the caller resets it once the controller answers on gRPC
    too). An unreachable controller is always retried: it may not be
    up yet, or be restarting. A refusal is retried only with ``retry_refusals`` (a
    running combiner waits for its operator to fix it); at start it is raised, so a
    wrong token or CA stops the combiner with the reason."""
    while not stop.is_set():
        try:
            enrolment = await asyncio.to_thread(attempt)
        except UnavailableError as exc:
            log.warning("cannot reach the controller yet (%s); retrying", exc)
        except StrataError as exc:
            if not retry_refusals:
                raise
            log.error("the controller refused this combiner's enrolment (%s); retrying", exc)
        else:
            return enrolment
        await wait_or_stop(stop, backoff.next_delay())
    return None


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


class ServingTrust:
    """What the combiner's server checks callers with, swappable while it serves.

    Its server credentials ask for the certificate at each new TLS handshake, and `verify`
    reads the current token key at each call, so `update` takes effect without restarting
    the server (which would drop every client's stream).
    """

    def __init__(self, enrolment: Enrolment) -> None:
        if enrolment.identity is None:
            raise ConfigError("an insecure combiner has no certificate to serve with")
        self._identity = enrolment.identity
        self._combiner_id = enrolment.combiner_id
        self._verifier = TokenVerifier(enrolment.token_key_pem.encode())
        self._key_pem = enrolment.token_key_pem
        self._revoked: list[str] = []
        self._changed = False

    def verify(self, token: str) -> Claims:
        """The caller's claims; a client must bring its ticket for this very combiner (from
        ``/assign``), so a client token replayed by another combiner, or the client's own
        token for the controller, buys nothing here."""
        claims = self._verifier.verify(token)
        if claims.role == Role.CLIENT and claims.audience != self._combiner_id:
            raise AuthError(
                f"this client token is for {claims.audience!r}, not combiner "
                f"{self._combiner_id!r}; connect with the ticket POST /api/v1/assign gives"
            )
        return claims

    @property
    def identity(self) -> TlsIdentity:
        """The certificate served now (the metrics server presents it too)."""
        return self._identity

    def set_revoked(self, token_ids: Sequence[str]) -> None:
        self._revoked = list(token_ids)
        self._verifier.set_revoked(self._revoked)

    def update(self, enrolment: Enrolment) -> None:
        """Serve ``enrolment``'s certificate from the next handshake, and check tokens
        with its key from the next call."""
        if enrolment.token_key_pem != self._key_pem:
            verifier = TokenVerifier(enrolment.token_key_pem.encode(), revoked=self._revoked)
            self._verifier, self._key_pem = verifier, enrolment.token_key_pem
        if enrolment.identity is not None and enrolment.identity != self._identity:
            self._identity, self._changed = enrolment.identity, True

    def server_credentials(self) -> grpc.ServerCredentials:
        # gRPC documents None from the fetcher as "no change"; its type stub omits that.
        fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], self._fetch)
        return grpc.dynamic_ssl_server_credentials(self._configuration(), fetch)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        identity = self._identity
        return grpc.ssl_server_certificate_configuration(
            [(identity.key_pem, identity.cert_pem)], root_certificates=identity.ca_pem
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration, or None to keep it."""
        if not self._changed:
            return None
        self._changed = False
        return self._configuration()
