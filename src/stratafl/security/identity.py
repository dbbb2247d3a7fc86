"""A process's TLS identity on disk: its certificate, its key and the CA it trusts.

Apart from `stratafl.security.certs` (which makes identities) because every process
reads one and only the controller makes them. Reading checks what a TLS handshake would
otherwise reject later and vaguely: that the files are PEM and the key fits the
certificate, so a misconfigured path fails at start-up, naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from stratafl.errors import ConfigError
from stratafl.security.files import read_pem, write_private, write_public

__all__ = ["TlsIdentity", "TlsPaths", "load_pair"]

_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class TlsPaths:
    """Where one identity's files are: what a process is configured with."""

    cert: Path
    key: Path
    ca: Path


def load_pair(
    cert_pem: bytes, key_pem: bytes, where: str
) -> tuple[x509.Certificate, PrivateKeyTypes]:
    """The first certificate and the key, refusing a pair whose keys do not match."""
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, IndexError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"{where}: not a PEM certificate and an unencrypted PEM private key ({exc})"
        ) from exc
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ConfigError(f"{where}: the private key does not belong to the certificate")
    return cert, key


@dataclass(frozen=True)
class TlsIdentity:
    """What one process presents: its certificate, its key, and the CA it trusts."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)  # never printed by accident
    ca_pem: bytes

    def write(self, folder: Path, name: str) -> TlsPaths:
        """Write ``name.crt``, ``name.key`` (mode 0600) and ``ca.crt`` into ``folder``."""
        if not _FILE_NAME.fullmatch(name) or name == "ca":
            raise ConfigError(f"identity name {name!r} must be a plain file name other than 'ca'")
        paths = TlsPaths(folder / f"{name}.crt", folder / f"{name}.key", folder / "ca.crt")
        if (folder / "ca.key").exists() and paths.ca.exists():
            if paths.ca.read_bytes() != self.ca_pem:
                raise ConfigError(
                    f"{folder} holds another CA (ca.crt, ca.key); write this identity elsewhere"
                )
        write_private(paths.key, self.key_pem)
        write_public(paths.cert, self.cert_pem)
        write_public(paths.ca, self.ca_pem)
        return paths

    @classmethod
    def read(cls, paths: TlsPaths) -> TlsIdentity:
        """Read and check an identity: a key that does not match its certificate, or a
        file that is not PEM, fails here with its path rather than later in a handshake."""
        cert_pem = read_pem(paths.cert, "a TLS certificate")
        key_pem = read_pem(paths.key, "a TLS private key")
        ca_pem = read_pem(paths.ca, "the federation's CA certificate")
        load_pair(cert_pem, key_pem, f"{paths.cert} and {paths.key}")
        try:
            x509.load_pem_x509_certificates(ca_pem)
        except ValueError as exc:
            raise ConfigError(f"{paths.ca} is not a PEM certificate ({exc})") from exc
        return cls(cert_pem=cert_pem, key_pem=key_pem, ca_pem=ca_pem)
