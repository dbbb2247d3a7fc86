"""The controller as the federation's root of trust: its CA, its token signer, its own TLS
identity, and the tokens it has handed out.

Everything lives in one folder of the controller's work folder (``trust/``): the CA
(``ca.crt``, ``ca.key``), the token-signing key, the controller's server certificate
(re-issued at every start for the names it serves under) and, made at the first start,
an admin token (``admin.token``, mode 0600) for whoever runs the controller: the
bootstrap from which every other identity is issued (`strata token create`).

An organisation may bring its own server certificate and CA bundle instead
(`serving_own`): the controller then serves that certificate on REST and gRPC, and
trusts the bundle beside its CA when it dials combiners (which may serve the
organisation's certificates too). Its CA still signs the certificates of combiners that
bring none, and its key still signs every token.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from stratafl.errors import AuthError, ConfigError, Conflict, PermissionDenied
from stratafl.records import TokenRecord
from stratafl.security import (
    CertificateAuthority,
    Claims,
    Role,
    TlsIdentity,
    TlsPaths,
    TokenSigner,
    TokenVerifier,
)
from stratafl.security.certs import host_name, is_loopback_host
from stratafl.security.claims import CONTROLLER_AUDIENCE
from stratafl.security.files import create_private
from stratafl.security.own import OwnCertificate
from stratafl.store.state import StateStore

DAY = 24 * 3600.0
CONTROLLER_TOKEN_SECONDS = 30 * DAY
"""The controller's own token (it calls combiners with it): re-issued at every start."""
ADMIN_TOKEN_SECONDS = 30 * DAY
"""Admins and viewers: people, who ask for a new token when theirs expires."""
METRICS_TOKEN_SECONDS = 365 * DAY
"""A scraper's token sits in a scrape config, and a lapsed one silently blinds the
monitoring; it can read nothing but metrics, so it lives a year (revoke it if it leaks)."""
MEMBER_TOKEN_SECONDS = 1 * DAY
"""A client's or combiner's token: short, because the tier renews it itself
(``POST /tokens/renew``) well before it expires; a stolen copy dies within a day."""
TICKET_SECONDS = 30 * 60.0
"""A client's ticket for its combiner; the client asks ``/assign`` again halfway through."""
MAX_TOKEN_SECONDS = 5 * 365 * 24 * 3600.0
DEFAULT_TOKEN_SECONDS = {
    Role.ADMIN: ADMIN_TOKEN_SECONDS,
    Role.COMBINER: MEMBER_TOKEN_SECONDS,
    Role.CLIENT: MEMBER_TOKEN_SECONDS,
    Role.VIEWER: ADMIN_TOKEN_SECONDS,
    Role.METRICS: METRICS_TOKEN_SECONDS,
}
RENEWABLE = frozenset({Role.CLIENT, Role.COMBINER, Role.ADMIN})


@dataclass
class Trust:
    authority: CertificateAuthority
    signer: TokenSigner
    verifier: TokenVerifier
    identity: TlsIdentity
    """The controller's own certificate and key, for its REST API and its gRPC service."""
    paths: TlsPaths
    folder: Path
    own_hosts: frozenset[str] = frozenset()
    """The controller's names and addresses off loopback: no other certificate names them
    (loopback is every local process's own, so a certificate for it impersonates no one)."""
    revoked: list[str] = field(default_factory=list)
    """Revoked, unexpired token ids: what combiners get with every heartbeat."""
    bundle_pem: bytes = b""
    """An organisation's CA bundle, trusted beside the federation's CA when dialling."""

    @classmethod
    def load_or_create(cls, folder: Path, hosts: Sequence[str]) -> Trust:
        """The trust folder's CA and signing key (made on first use) and a fresh server
        certificate for ``hosts`` (the names and addresses the controller is reached at)."""
        authority = CertificateAuthority.load_or_create(folder)
        signer = TokenSigner.load_or_create(folder / "token-signing.key")
        identity = authority.issue("stratafl controller", sorted(set(hosts)))
        paths = identity.write(folder, "controller")
        own = frozenset(host_name(host) for host in hosts if not is_loopback_host(host))
        return cls(authority, signer, signer.verifier(), identity, paths, folder, own_hosts=own)

    def with_organisation(
        self, own: OwnCertificate | None, *, host: str, bundle_pem: bytes = b""
    ) -> Trust:
        """This trust, trusting ``bundle_pem`` beside the CA when dialling and, with
        ``own``, serving the organisation's certificate (it must name ``host``, the
        advertised name) instead of one the CA issued."""
        trust = replace(self, bundle_pem=bundle_pem)
        if own is None:
            return trust
        identity = own.identity(trust.dialing_pem, host=host)
        return replace(trust, identity=identity, paths=TlsPaths(own.cert, own.key, self.ca_path))

    @property
    def dialing_pem(self) -> bytes:
        """What the controller trusts when it dials a combiner: its CA and the bundle."""
        if not self.bundle_pem:
            return self.authority.ca_pem
        return self.authority.ca_pem.strip() + b"\n" + self.bundle_pem.strip() + b"\n"

    @property
    def ca_path(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def admin_token_path(self) -> Path:
        return self.folder / "admin.token"

    def start(self, store: StateStore) -> str:
        """Load the revocations, make the bootstrap admin token if there is none yet, and
        return a fresh token for the controller's own calls to combiners."""
        self.refresh(store)
        if not self.admin_token_path.exists():
            token, _ = self.issue(
                store,
                name="bootstrap admin",
                subject="admin",
                role=Role.ADMIN,
                ttl_seconds=ADMIN_TOKEN_SECONDS,
            )
            create_private(self.admin_token_path, token.encode())
        token, _ = self.issue(
            store,
            name="controller",
            subject="controller",
            role=Role.CONTROLLER,
            ttl_seconds=CONTROLLER_TOKEN_SECONDS,
        )
        return token

    def issue(
        self,
        store: StateStore,
        *,
        name: str,
        subject: str,
        role: Role,
        ttl_seconds: float | None = None,
        max_examples: int | None = None,
        hosts: Sequence[str] = (),
    ) -> tuple[str, TokenRecord]:
        """Sign a token and keep its claims (never the token) so it can be listed and revoked.

        ``ttl_seconds`` defaults by role (`DEFAULT_TOKEN_SECONDS`); ``hosts`` are the only
        certificate hosts a combiner's token may ask for."""
        if ttl_seconds is None:
            ttl_seconds = DEFAULT_TOKEN_SECONDS.get(role, MEMBER_TOKEN_SECONDS)
        if not 0 < ttl_seconds <= MAX_TOKEN_SECONDS:
            raise ConfigError(
                f"a token's lifetime must be between 1 s and {MAX_TOKEN_SECONDS:.0f} s "
                f"(5 years), got {ttl_seconds}"
            )
        if hosts and role != Role.COMBINER:
            raise ConfigError(f"only a combiner serves, so a {role} token names no hosts")
        token, claims = self.signer.issue(
            subject,
            role,
            ttl_seconds,
            max_examples=max_examples,
            hosts=[self._allowed_host(host) for host in hosts],
        )
        return token, store.add_token(claims, name)

    def ticket(self, caller: Claims, combiner_id: str) -> str:
        """A client's short token for ``combiner_id`` alone (same subject and cap, and the
        same id as the client's token, so revoking that token revokes its tickets too)."""
        ttl = min(TICKET_SECONDS, caller.expires_at - time.time())
        if ttl <= 0:
            raise AuthError(f"token {caller.token_id} expired; renew it or ask for a new one")
        token, _ = self.signer.issue(
            caller.subject,
            Role.CLIENT,
            ttl,
            max_examples=caller.max_examples,
            audience=combiner_id,
            token_id=caller.token_id,
        )
        return token

    def renew(self, store: StateStore, caller: Claims) -> tuple[str, TokenRecord]:
        """A fresh copy of the caller's still-valid token: same id, subject, role, cap and
        hosts, and its original lifetime from now. Its record's expiry moves with it, so
        revoking the id still refuses every copy."""
        if caller.role not in RENEWABLE:
            raise PermissionDenied(f"a {caller.role} token is not renewed; it is issued anew")
        lifetime = caller.expires_at - caller.issued_at
        token, claims = self.signer.issue(
            caller.subject,
            caller.role,
            lifetime,
            max_examples=caller.max_examples,
            hosts=caller.hosts,
            token_id=caller.token_id,
        )
        return token, store.extend_token(claims.token_id, claims.expires_at)

    def revoke(self, store: StateStore, token_id: str) -> TokenRecord:
        """Revoke a token, unless it is the last live admin token (no one could then issue
        or revoke anything again). ``token_id`` may be a unique prefix of the id."""
        token_id = store.token(token_id).token_id
        if store.live_admin_tokens() == [token_id]:
            raise Conflict(
                f"token {token_id} is the last admin token that is neither revoked nor "
                "expired; create another first (strata token create --role admin), then "
                "revoke this one"
            )
        record = store.revoke_token(token_id)
        self.refresh(store)
        return record

    def refresh(self, store: StateStore) -> list[str]:
        """Load the revoked, unexpired token ids into the verifier; returns them (combiners
        get the same list with every heartbeat)."""
        self.revoked = store.revoked_token_ids()
        self.verifier.set_revoked(self.revoked)
        return self.revoked

    def verify(self, token: str) -> Claims:
        """The claims of a token meant for the controller: a client's ticket is refused
        here (it is for its combiner alone), so a combiner cannot replay one at us."""
        claims = self.verifier.verify(token)
        if claims.audience != CONTROLLER_AUDIENCE:
            raise AuthError(
                f"this is a ticket for combiner {claims.audience!r}, which only that combiner "
                "accepts; call the controller with the client's own token"
            )
        return claims

    def sign_certificate(self, csr_pem: bytes, caller: Claims, hosts: Sequence[str]) -> bytes:
        """A certificate for ``caller`` (its name is the token's subject, never the CSR's)
        naming only hosts its token allows (`issue`'s ``hosts``)."""
        allowed = {host_name(host) for host in caller.hosts}
        refused = sorted({host for host in hosts if host_name(host) not in allowed})
        if refused:
            granted = ", ".join(caller.hosts) or "none"
            raise PermissionDenied(
                f"the token of {caller.subject} allows certificate hosts {granted}, not "
                f"{', '.join(refused)}; ask the admin for a token with them "
                "(strata token create --role combiner --host H)"
            )
        return self.authority.sign_request(csr_pem, hosts, common_name=caller.subject)

    def _allowed_host(self, host: str) -> str:
        """``host`` if a combiner may be issued a certificate for it (no wildcard, not one
        of the controller's own names)."""
        name = host_name(host)
        if name in self.own_hosts:
            raise ConfigError(
                f"{host} is one of the controller's own names; a combiner's certificate "
                "must not name it (pick the combiner's own name or address)"
            )
        return name
