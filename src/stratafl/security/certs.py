"""The federation's certificate authority and the TLS identities it issues (PEM bytes).

The controller holds the CA; every combiner, client and the REST API present a
certificate it signed, and trust that CA alone, so TLS on every link needs no outside
PKI. Keys are ECDSA P-256: gRPC's BoringSSL, Python's `ssl` and browsers all accept
them, and they are fast to make. Certificates carry both server and client auth, so one
identity serves a combiner as a server (to clients) and as a client (to the controller).

A process that enrols makes its key itself and sends only a request
(`certificate_request`); the controller decides its name and hosts (`sign_request`
ignores what the request asks for), so the private key never crosses the network and a
request cannot name itself into another identity.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stratafl.errors import ConfigError
from stratafl.security.files import MAX_PEM_BYTES, create_private, read_pem, write_public
from stratafl.security.identity import TlsIdentity, TlsPaths, load_pair

__all__ = [
    "CertificateAuthority",
    "TlsIdentity",
    "TlsPaths",
    "certificate_request",
    "host_name",
    "is_loopback_host",
]

CA_DAYS = 3650
MAX_DAYS = 3650
MAX_HOSTS = 100
CLOCK_SKEW = timedelta(minutes=5)  # a peer whose clock is a little behind still accepts it
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
"""No wildcards: a certificate names each host it serves, so no name can stand for others."""
_CURVES = (ec.SECP256R1, ec.SECP384R1)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Subject alternative names: an IP address for an IP host, a DNS name otherwise."""
    if isinstance(hosts, str):  # one host, not its characters
        hosts = [hosts]
    if len(hosts) > MAX_HOSTS:
        raise ConfigError(f"{len(hosts)} hosts for one certificate; at most {MAX_HOSTS}")
    names: list[x509.GeneralName] = []
    for host in hosts:
        text = host.strip() if isinstance(host, str) else ""
        name: x509.GeneralName
        try:
            name = x509.IPAddress(ipaddress.ip_address(text.removeprefix("[").removesuffix("]")))
        except ValueError:
            if "*" in text:
                raise ConfigError(
                    f"host {host!r} is a wildcard; certificates name each host itself"
                ) from None
            if len(text) > 253 or not _DNS_NAME.fullmatch(text):
                raise ConfigError(
                    f"host {host!r} is neither an IP address nor a DNS name; pass e.g. "
                    "127.0.0.1, ::1 or combiner-1.example.org"
                ) from None
            name = x509.DNSName(text.lower())
        if name not in names:
            names.append(name)
    return names


def host_name(host: str) -> str:
    """``host`` as a certificate names it (an IP address in its short form, a DNS name in
    lower case); `ConfigError` for a wildcard or anything that is neither."""
    name = _names([host])[0]
    return str(name.value).lower()


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: names every machine gives its own processes."""
    text = host.strip().removeprefix("[").removesuffix("]").lower()
    if text == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def _common_name(common_name: str) -> x509.Name:
    if not (isinstance(common_name, str) and 0 < len(common_name) <= 64):
        raise ConfigError(f"common name {common_name!r} must be 1 to 64 characters")
    if not common_name.isprintable():
        raise ConfigError(f"common name {common_name!r} must be printable")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    not_after: datetime,
    *,
    ca: bool,
) -> x509.CertificateBuilder:
    """What the CA's and every issued certificate share: names, validity, key usage."""
    key_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),  # RSA key exchange
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


class CertificateAuthority:
    """The federation's CA: a self-signed certificate and its key. Holds no file open."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self._cert = cert
        self._key = key

    @classmethod
    def load_or_create(
        cls, folder: Path, name: str = "stratafl federation CA"
    ) -> CertificateAuthority:
        """The CA in ``folder`` (``ca.crt``, ``ca.key``), created there if neither exists.

        A restarted controller must keep its CA, or no certificate it issued verifies; so
        a half-present or mismatched pair is an error, never replaced.
        """
        cert_path, key_path = folder / "ca.crt", folder / "ca.key"
        if not cert_path.exists() and not key_path.exists():
            ca = cls._generate(name)
            if create_private(key_path, _private_pem(ca._key)):
                write_public(cert_path, ca.ca_pem)
                return ca
        for missing, present in ((cert_path, key_path), (key_path, cert_path)):
            if not missing.exists():
                raise ConfigError(
                    f"{present} exists without {missing.name}; restore {missing.name}, or move "
                    f"{present.name} away to create a new CA (certificates issued so far will fail)"
                )
        where = f"the federation's CA in {folder}"
        cert, key = load_pair(
            read_pem(cert_path, "a CA certificate"), read_pem(key_path, "a CA key"), where
        )
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca or not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{cert_path} is not a CA certificate; restore the CA's own")
        return cls(cert, key)

    @classmethod
    def _generate(cls, name: str) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _common_name(name)
        not_after = datetime.now(UTC) + timedelta(days=CA_DAYS)
        builder = _builder(subject, subject, key.public_key(), not_after, ca=True)
        return cls(builder.sign(key, hashes.SHA256()), key)

    @property
    def ca_pem(self) -> bytes:
        return _pem(self._cert)

    def issue(self, common_name: str, hosts: Sequence[str], *, days: int = 365) -> TlsIdentity:
        """A new identity (key made here) named ``common_name``, valid for ``hosts``."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(key.public_key(), common_name, hosts, days)
        return TlsIdentity(cert_pem=_pem(cert), key_pem=_private_pem(key), ca_pem=self.ca_pem)

    def sign_request(
        self, csr_pem: bytes, hosts: Sequence[str], *, common_name: str, days: int = 365
    ) -> bytes:
        """A certificate (PEM) for the key in ``csr_pem``, named by the arguments.

        The request proves its sender holds the key (its signature must verify); the name
        and hosts it asks for are ignored: the controller decides who this is.
        """
        fix = "make a new request with `strata` (certificate_request)"
        if not isinstance(csr_pem, bytes) or len(csr_pem) > MAX_PEM_BYTES:
            raise ConfigError(f"the certificate request is not PEM bytes under 1 MiB; {fix}")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
            valid = csr.is_signature_valid
            key = csr.public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"not a PEM certificate signing request; {fix}") from exc
        if not valid:
            raise ConfigError(f"the certificate request's signature does not verify; {fix}")
        ec_ok = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _CURVES)
        if not (ec_ok or (isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048)):
            raise ConfigError(
                f"the certificate request's key ({type(key).__name__}) is not ECDSA P-256/P-384 "
                f"or RSA >= 2048; {fix}"
            )
        return _pem(self._sign(key, common_name, hosts, days))

    def _sign(
        self,
        public_key: CertificatePublicKeyTypes,
        common_name: str,
        hosts: Sequence[str],
        days: int,
    ) -> x509.Certificate:
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise ConfigError(f"days must be a whole number from 1 to {MAX_DAYS}, got {days!r}")
        subject, names = _common_name(common_name), _names(hosts)
        not_after = min(datetime.now(UTC) + timedelta(days=days), self._cert.not_valid_after_utc)
        eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        builder = (
            _builder(subject, self._cert.subject, public_key, not_after, ca=False)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(aki, critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self._key, hashes.SHA256())


def certificate_request(common_name: str, hosts: Sequence[str]) -> tuple[bytes, bytes]:
    """``(csr_pem, key_pem)`` for a process that enrols: the key stays with it.

    The hosts in the request are a hint for a person reading it; the controller names the
    certificate's hosts itself.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(_common_name(common_name))
    names = _names(hosts)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), _private_pem(key)
