"""An organisation's own certificates: a server certificate and key it brings, and the CA
bundle it trusts, instead of (or beside) the federation's CA.

Organisations run their own PKI: a hospital's combiner must present the certificate its
security team issued, and its clients trust that team's CA. So a controller or combiner
may serve a certificate and key from files (``--tls-cert``, ``--tls-key``), and any
process may trust a CA bundle (``--ca-bundle``) beside, or instead of, the federation's
``ca.crt``. Tokens are unchanged: TLS says which server a peer reached, the token who is
calling. Everything is checked when the files are read, so a wrong file stops the tier at
start with its path and the fix, never in a handshake later: the key must fit the
certificate, the certificate must be valid now and name the host peers dial.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from stratafl.errors import ConfigError
from stratafl.security.files import read_pem
from stratafl.security.identity import TlsIdentity, load_pair

__all__ = ["OwnCertificate", "certificate_hosts", "read_ca_bundle", "trusted_pem"]


def read_ca_bundle(path: Path) -> bytes:
    """The PEM certificates in ``path`` (at least one), as read; `ConfigError` naming the
    file otherwise."""
    pem = read_pem(path, "a CA bundle")
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError(
            f"{path} holds no PEM certificate ({exc}); pass the organisation's CA "
            "certificates in PEM (-----BEGIN CERTIFICATE-----)"
        ) from exc
    if not certificates:
        raise ConfigError(f"{path} holds no PEM certificate; pass the CA certificates in PEM")
    return pem


def trusted_pem(ca_file: Path | None, ca_bundle: Path | None) -> bytes | None:
    """What a process trusts when it dials: the federation's CA, an organisation's bundle,
    or both (concatenated); None if neither is given."""
    parts = []
    if ca_file is not None:
        parts.append(read_pem(ca_file, "the federation's CA certificate"))
    if ca_bundle is not None:
        parts.append(read_ca_bundle(ca_bundle))
    if not parts:
        return None
    return b"\n".join(part.strip() for part in parts) + b"\n"


def certificate_hosts(certificate: x509.Certificate) -> list[str]:
    """The hosts a certificate names (its subject alternative names), IPs in short form."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    hosts = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    return hosts + [name.lower() for name in names.get_values_for_type(x509.DNSName)]


def _names_host(hosts: list[str], host: str) -> bool:
    """True if ``host`` is among ``hosts`` as TLS checks it: an IP exactly, a DNS name
    exactly or by a wildcard in its first label (``*.example.org``)."""
    text = host.strip().removeprefix("[").removesuffix("]").lower()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return any(_same_ip(name, address) for name in hosts)
    for name in hosts:
        if name == text:
            return True
        if name.startswith("*.") and "." in text and text.split(".", 1)[1] == name[2:]:
            return True
    return False


def _same_ip(name: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(name) == address
    except ValueError:
        return False


@dataclass(frozen=True)
class OwnCertificate:
    """A server certificate (with its chain, leaf first) and its key, from files the
    organisation keeps; read anew at each `identity` call, so a renewed pair is picked
    up by the next enrolment."""

    cert: Path
    key: Path

    @classmethod
    def of(cls, cert: Path | None, key: Path | None) -> OwnCertificate | None:
        """The pair from ``--tls-cert`` and ``--tls-key`` (None when neither is given)."""
        if (cert is None) != (key is None):
            raise ConfigError(
                "--tls-cert and --tls-key go together: pass the certificate and its key"
            )
        if cert is None or key is None:
            return None
        return cls(cert, key)

    def check(self, host: str) -> None:
        """Fail now, naming the file and the fix, if `identity` would fail for ``host``."""
        self.identity(b"", host=host)

    def identity(self, trusted: bytes, *, host: str | None) -> TlsIdentity:
        """The identity to serve with, checked: the key fits, the certificate is valid now
        and names ``host`` (what peers dial; None: any name it carries will do). ``trusted``
        becomes its CA (what the server checks client certificates with)."""
        cert_pem = read_pem(self.cert, "a TLS certificate")
        key_pem = read_pem(self.key, "a TLS private key")
        certificate, _ = load_pair(cert_pem, key_pem, f"--tls-cert {self.cert} and --tls-key")
        now = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise ConfigError(
                f"--tls-cert {self.cert} is valid from {certificate.not_valid_before_utc:%Y-%m-%d} "
                f"to {certificate.not_valid_after_utc:%Y-%m-%d}, not now; renew it"
            )
        hosts = certificate_hosts(certificate)
        if host is not None and not _names_host(hosts, host):
            named = ", ".join(hosts) or "no host"
            raise ConfigError(
                f"--tls-cert {self.cert} names {named}, not {host}, the host peers dial; pass "
                "--advertise-address with a name it carries, or a certificate naming "
                f"{host}"
            )
        return TlsIdentity(cert_pem=cert_pem, key_pem=key_pem, ca_pem=trusted)
