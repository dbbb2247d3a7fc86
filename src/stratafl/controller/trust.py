"""The controller as the federation's root of trust: its CA, its token signer, its own TLS
identity, and the tokens it has handed out.

Everything lives in one folder of the controller's work folder (``trust/``): the CA
(``ca.crt``, ``ca.key``), the token-signing key, the controller's server certificate
(re-issued at every start for the names it serves under) and, made at the first start,
an admin token (``admin.token``, mode 0600) for whoever runs the controller: the
bootstrap from which every other identity is issued (`strata token create`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stratafl.errors import ConfigError
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
from stratafl.security.files import create_private
from stratafl.store.state import StateStore

CONTROLLER_TOKEN_SECONDS = 30 * 24 * 3600.0
"""The controller's own token (it calls combiners with it): re-issued at every start."""
ADMIN_TOKEN_SECONDS = 365 * 24 * 3600.0
MAX_TOKEN_SECONDS = 5 * 365 * 24 * 3600.0


@dataclass
class Trust:
    authority: CertificateAuthority
    signer: TokenSigner
    verifier: TokenVerifier
    identity: TlsIdentity
    """The controller's own certificate and key, for its REST API and its gRPC service."""
    paths: TlsPaths
    folder: Path
    revoked: list[str] = field(default_factory=list)
    """Revoked, unexpired token ids: what combiners get with every heartbeat."""

    @classmethod
    def load_or_create(cls, folder: Path, hosts: Sequence[str]) -> Trust:
        """The trust folder's CA and signing key (made on first use) and a fresh server
        certificate for ``hosts`` (the names and addresses the controller is reached at)."""
        authority = CertificateAuthority.load_or_create(folder)
        signer = TokenSigner.load_or_create(folder / "token-signing.key")
        identity = authority.issue("stratafl controller", sorted(set(hosts)))
        paths = identity.write(folder, "controller")
        return cls(authority, signer, signer.verifier(), identity, paths, folder)

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
        ttl_seconds: float,
        max_examples: int | None = None,
    ) -> tuple[str, TokenRecord]:
        """Sign a token and keep its claims (never the token) so it can be listed and revoked."""
        if not 0 < ttl_seconds <= MAX_TOKEN_SECONDS:
            raise ConfigError(
                f"a token's lifetime must be between 1 s and {MAX_TOKEN_SECONDS:.0f} s "
                f"(5 years), got {ttl_seconds}"
            )
        token, claims = self.signer.issue(subject, role, ttl_seconds, max_examples=max_examples)
        return token, store.add_token(claims, name)

    def revoke(self, store: StateStore, token_id: str) -> TokenRecord:
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
        return self.verifier.verify(token)

    def sign_certificate(self, csr_pem: bytes, caller: Claims, hosts: Sequence[str]) -> bytes:
        """A certificate for ``caller`` (its name is the token's subject, never the CSR's)."""
        return self.authority.sign_request(csr_pem, hosts, common_name=caller.subject)
