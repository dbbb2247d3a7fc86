"""What a process presents on its links, built once from its files.

A secured process dials out with the federation's CA (to check whom it reaches) and its
bearer token (to say who it is); a secured
server presents its certificate and checks every call with `AuthInterceptor`. An insecure
process (``--insecure``: loopback only) has none of these.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from stratafl.errors import ConfigError
from stratafl.security import Claims, Role, TlsIdentity
from stratafl.security.files import read_token
from stratafl.security.own import trusted_pem
from stratafl.transport.auth import AuthInterceptor, TokenAuth
from stratafl.transport.channels import LinkSecurity


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": the only binds ``--insecure`` may use."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_insecure_off_loopback(host: str, tier: str) -> None:
    if not is_loopback(host):
        raise ConfigError(
            f"--insecure serves without TLS or tokens, so it is allowed on a loopback address "
            f"only, not {host}; drop --insecure (the {tier} then serves TLS and checks tokens)"
        )


def refuse_certificates_when_insecure(*files: Path | None) -> None:
    """``--insecure`` serves no TLS: a certificate or CA bundle given with it is a mistake."""
    if any(file is not None for file in files):
        raise ConfigError(
            "--insecure serves without TLS, so --tls-cert, --tls-key and --ca-bundle mean "
            "nothing with it; drop --insecure (to serve TLS) or drop them"
        )


@dataclass(frozen=True)
class PeerCredentials:
    """How a process dials out: its token, the CA it trusts, its certificate for mTLS."""

    token: str | None = None
    ca_pem: bytes | None = None
    client_identity: TlsIdentity | None = None
    """Presented only to servers that require mutual TLS."""

    @property
    def secure(self) -> bool:
        return self.token is not None

    @classmethod
    def from_files(
        cls,
        token_file: Path | None,
        ca_file: Path | None,
        tier: str,
        *,
        ca_bundle: Path | None = None,
    ) -> PeerCredentials:
        """Read a token file and what to trust: the federation's CA, an organisation's CA
        bundle, or both; a token and one of them are needed unless insecure."""
        if token_file is None or (ca_file is None and ca_bundle is None):
            raise ConfigError(
                f"a {tier} needs --token-file and --ca-file (from the federation's admin: "
                "`strata token create` and the controller's trust/ca.crt) or --ca-bundle (an "
                "organisation's CA bundle), or --insecure on loopback"
            )
        trusted = trusted_pem(ca_file, ca_bundle)
        return cls(token=read_token(token_file), ca_pem=trusted)

    def with_token(self, token: str) -> PeerCredentials:
        return PeerCredentials(token, self.ca_pem, self.client_identity)

    def with_identity(self, identity: TlsIdentity) -> PeerCredentials:
        return PeerCredentials(self.token, self.ca_pem, identity)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS with the CA plus the token on every call; None for an insecure link."""
        transport = self.tls_credentials()
        if transport is None or self.token is None:
            return None
        token = self.token
        return grpc.composite_channel_credentials(
            transport, grpc.metadata_call_credentials(TokenAuth(lambda: token))
        )

    def tls_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS with the CA (and this peer's certificate, if it has one), without the token:
        for a caller that puts the token on each call itself (`bearer_metadata`); None for
        an insecure link."""
        if self.token is None:
            return None
        identity = self.client_identity
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=identity.key_pem if identity else None,
            certificate_chain=identity.cert_pem if identity else None,
        )

    def http_verify(self) -> ssl.SSLContext | bool:
        """What httpx checks the controller's certificate with."""
        if self.ca_pem is None:
            return True
        return ssl.create_default_context(cadata=self.ca_pem.decode())


INSECURE = PeerCredentials()


def serving_security(
    identity: TlsIdentity | None,
    verify: Callable[[str], Claims] | None,
    roles: Mapping[str, frozenset[Role]],
    dialing: PeerCredentials,
) -> LinkSecurity:
    """A server's TLS and token check, with how the same process dials out."""
    if identity is None or verify is None:
        return LinkSecurity(channel_credentials=dialing.channel_credentials())
    server = grpc.ssl_server_credentials(
        [(identity.key_pem, identity.cert_pem)],
        root_certificates=identity.ca_pem,
        require_client_auth=False,  # a caller proves who it is with its token (docs/security.md)
    )
    return LinkSecurity(
        server_credentials=server,
        channel_credentials=dialing.channel_credentials(),
        interceptors=(AuthInterceptor(verify, roles),),
    )
