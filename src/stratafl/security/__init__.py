"""Trust: the federation's roles, signed tokens, CA and TLS identities.

The controller is the root of trust: it holds the CA (`CertificateAuthority`) and the
token-signing key (`TokenSigner`) and issues identities. Everyone else only verifies
(`TokenVerifier`, the CA certificate). The transport's interceptors, the REST API and the
CLI build on this package; it imports nothing of stratafl but its errors.
"""

from stratafl.security.certs import (
    CertificateAuthority,
    TlsIdentity,
    TlsPaths,
    certificate_request,
)
from stratafl.security.roles import Role
from stratafl.security.tokens import (
    MAX_TOKEN_CHARS,
    Claims,
    TokenSigner,
    TokenVerifier,
    read_claims_unverified,
)

__all__ = [
    "MAX_TOKEN_CHARS",
    "CertificateAuthority",
    "Claims",
    "Role",
    "TlsIdentity",
    "TlsPaths",
    "TokenSigner",
    "TokenVerifier",
    "certificate_request",
    "read_claims_unverified",
]
