"""The federation's CA and TLS identities, checked by the TLS stacks that will use them:
`cryptography`'s verifier, Python's `ssl` (uvicorn, httpx) and grpcio (BoringSSL)."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from stratafl.errors import ConfigError
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.security import CertificateAuthority, TlsIdentity, TlsPaths, certificate_request


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("other"))


def cert_of(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def sans(cert: x509.Certificate) -> list[object]:
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_the_ca_is_created_private_and_reloaded_unchanged(tmp_path: Path):
    ca = CertificateAuthority.load_or_create(tmp_path, name="test federation")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "ca.key"]
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert (tmp_path / "ca.crt").read_bytes() == ca.ca_pem
    again = CertificateAuthority.load_or_create(tmp_path, name="ignored on reload")
    assert again.ca_pem == ca.ca_pem
    root = cert_of(ca.ca_pem)
    assert common_name(root) == "test federation"
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    cert_of(again.issue("c", ["127.0.0.1"]).cert_pem).verify_directly_issued_by(root)


def test_a_half_present_or_foreign_ca_is_an_error_not_replaced(tmp_path: Path):
    CertificateAuthority.load_or_create(tmp_path)
    key = (tmp_path / "ca.key").read_bytes()
    (tmp_path / "ca.crt").unlink()
    with pytest.raises(ConfigError, match="ca.key exists without ca.crt"):
        CertificateAuthority.load_or_create(tmp_path)
    assert (tmp_path / "ca.key").read_bytes() == key
    other = tmp_path / "other"
    CertificateAuthority.load_or_create(other)
    (tmp_path / "ca.crt").write_bytes((other / "ca.crt").read_bytes())  # a mismatched pair
    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        CertificateAuthority.load_or_create(tmp_path)
    leaf = CertificateAuthority.load_or_create(other).issue("leaf", ["localhost"])
    (tmp_path / "ca.crt").write_bytes(leaf.cert_pem)  # a certificate that is not a CA
    (tmp_path / "ca.key").write_bytes(leaf.key_pem)
    with pytest.raises(ConfigError, match="not a CA certificate"):
        CertificateAuthority.load_or_create(tmp_path)


def test_an_issued_certificate_chains_to_the_ca_and_names_its_hosts(ca: CertificateAuthority):
    identity = ca.issue("combiner-1", ["127.0.0.1", "::1", "localhost", "Combiner.Example.org"])
    cert, root = cert_of(identity.cert_pem), cert_of(ca.ca_pem)
    cert.verify_directly_issued_by(root)
    assert identity.ca_pem == ca.ca_pem
    assert common_name(cert) == "combiner-1"
    assert sans(cert) == [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.DNSName("localhost"),
        x509.DNSName("combiner.example.org"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = serialization.load_pem_private_key(identity.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == cert.public_key()
    assert cert.not_valid_after_utc - datetime.now(UTC) > timedelta(days=364)
    assert "key_pem" not in repr(identity)


def test_the_web_pki_verifier_accepts_issued_servers_and_clients(ca: CertificateAuthority):
    """`cryptography`'s RFC 5280 verifier: a stricter check than OpenSSL's defaults."""
    identity = ca.issue("combiner-1", ["127.0.0.1", "localhost"])
    cert = cert_of(identity.cert_pem)
    builder = PolicyBuilder().store(Store([cert_of(ca.ca_pem)]))
    for name in (x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")):
        builder.build_server_verifier(name).verify(cert, [])
    builder.build_client_verifier().verify(cert, [])
    with pytest.raises(x509.verification.VerificationError):
        builder.build_server_verifier(x509.DNSName("elsewhere.org")).verify(cert, [])


def test_certificates_never_outlive_their_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "short-lived CA")])
    now = datetime.now(UTC)
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert = cert_of(CertificateAuthority(root, key).issue("c", ["localhost"], days=365).cert_pem)
    assert cert.not_valid_after_utc == root.not_valid_after_utc


@pytest.mark.parametrize(
    ("common", "hosts", "days", "match"),
    [
        ("c", ["not a host"], 365, "neither an IP address nor a DNS name"),
        ("c", [""], 365, "neither an IP address"),
        ("c", ["a..b"], 365, "neither an IP address"),
        ("c", ["localhost"], 0, "days"),
        ("c", ["localhost"], 3651, "days"),
        ("", ["localhost"], 365, "common name"),
        ("x" * 65, ["localhost"], 365, "common name"),
        ("c", ["h"] * 101, 365, "at most 100"),
    ],
)
def test_issue_refuses_bad_names_hosts_and_lifetimes(
    ca: CertificateAuthority, common: str, hosts: list[str], days: int, match: str
):
    with pytest.raises(ConfigError, match=match):
        ca.issue(common, hosts, days=days)


def test_a_single_host_string_is_one_host_and_duplicates_collapse(ca: CertificateAuthority):
    assert sans(cert_of(ca.issue("c", "127.0.0.1").cert_pem)) == [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    ]
    cert = cert_of(ca.issue("c", ["localhost", "LOCALHOST", "[::1]", "::1"]).cert_pem)
    assert sans(cert) == [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("::1"))]


def test_a_client_certificate_needs_no_hosts(ca: CertificateAuthority):
    cert = cert_of(ca.issue("client-1", []).cert_pem)
    with pytest.raises(x509.ExtensionNotFound):
        sans(cert)
    cert.verify_directly_issued_by(cert_of(ca.ca_pem))


def test_signing_a_request_takes_name_and_hosts_from_the_controller(ca: CertificateAuthority):
    csr_pem, key_pem = certificate_request("admin", ["evil.example", "10.9.9.9"])
    csr = x509.load_pem_x509_csr(csr_pem)
    assert csr.is_signature_valid and len(sans_of_csr(csr)) == 2  # what the request asks for
    cert = cert_of(ca.sign_request(csr_pem, ["127.0.0.1"], common_name="client-3"))
    cert.verify_directly_issued_by(cert_of(ca.ca_pem))
    assert common_name(cert) == "client-3"
    assert sans(cert) == [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert cert.public_key() == key.public_key()
    TlsIdentity(ca.sign_request(csr_pem, [], common_name="c"), key_pem, ca.ca_pem)


def sans_of_csr(csr: x509.CertificateSigningRequest) -> list[object]:
    return list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def _csr(key: object, cn: str = "aaaaaaaa") -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def test_a_forged_or_malformed_request_is_refused(ca: CertificateAuthority):
    good = x509.load_pem_x509_csr(_csr(ec.generate_private_key(ec.SECP256R1())))
    der = good.public_bytes(serialization.Encoding.DER)
    forged = x509.load_der_x509_csr(der.replace(b"aaaaaaaa", b"bbbbbbbb"))  # signature now wrong
    forged_pem = forged.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ConfigError, match="signature does not verify"):
        ca.sign_request(forged_pem, ["localhost"], common_name="c")
    for garbage in (b"", b"not a request", ca.ca_pem, b"-----BEGIN CERTIFICATE REQUEST-----\n"):
        with pytest.raises(ConfigError, match="not a PEM certificate signing request"):
            ca.sign_request(garbage, ["localhost"], common_name="c")
    with pytest.raises(ConfigError, match="under 1 MiB"):
        ca.sign_request(b"x" * (2 << 20), ["localhost"], common_name="c")


def test_requests_with_weak_or_unsupported_keys_are_refused(ca: CertificateAuthority):
    for key in (ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256K1())):
        with pytest.raises(ConfigError, match="is not ECDSA P-256/P-384 or RSA"):
            ca.sign_request(_csr(key), ["localhost"], common_name="c")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = cert_of(ca.sign_request(_csr(rsa_key), ["localhost"], common_name="c"))
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


def test_an_identity_is_written_with_a_private_key_and_read_back(
    ca: CertificateAuthority, tmp_path: Path
):
    identity = ca.issue("combiner-1", ["127.0.0.1"])
    paths = identity.write(tmp_path / "tls", "combiner-1")
    assert paths == TlsPaths(
        tmp_path / "tls" / "combiner-1.crt",
        tmp_path / "tls" / "combiner-1.key",
        tmp_path / "tls" / "ca.crt",
    )
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    assert TlsIdentity.read(paths) == identity
    identity.write(tmp_path / "tls", "combiner-1")  # writing again replaces the files
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [
        "ca.crt",
        "combiner-1.crt",
        "combiner-1.key",
    ]


def test_reading_a_broken_identity_names_the_file(ca: CertificateAuthority, tmp_path: Path):
    paths = ca.issue("a", ["127.0.0.1"]).write(tmp_path, "a")
    other = ca.issue("b", ["127.0.0.1"]).write(tmp_path, "b")
    with pytest.raises(ConfigError, match=r"a.crt and .*b.key: the private key does not"):
        TlsIdentity.read(TlsPaths(paths.cert, other.key, paths.ca))
    with pytest.raises(ConfigError, match=r"cannot read a TLS certificate from .*missing.crt"):
        TlsIdentity.read(TlsPaths(tmp_path / "missing.crt", paths.key, paths.ca))
    paths.ca.write_bytes(b"junk")
    with pytest.raises(ConfigError, match="ca.crt is not a PEM certificate"):
        TlsIdentity.read(paths)


def test_an_identity_never_overwrites_a_ca_folder(ca: CertificateAuthority, tmp_path: Path):
    CertificateAuthority.load_or_create(tmp_path)  # another CA lives here
    with pytest.raises(ConfigError, match="holds another CA"):
        ca.issue("a", ["localhost"]).write(tmp_path, "a")
    with pytest.raises(ConfigError, match="other than 'ca'"):
        ca.issue("a", ["localhost"]).write(tmp_path / "x", "ca")
    with pytest.raises(ConfigError, match="plain file name"):
        ca.issue("a", ["localhost"]).write(tmp_path / "x", "../a")


# -- the TLS stacks that will use these certificates ------------------------------------


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext, hostname: str) -> None:
    """A TLS handshake in memory (no sockets, no threads), as uvicorn and httpx would do."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


def _contexts(
    tmp_path: Path,
    server: TlsIdentity,
    client: TlsIdentity | None,
    *,
    server_trusts: bytes | None = None,
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(client, server) contexts from identities written to disk, as uvicorn loads them."""
    server_paths = server.write(tmp_path / "server", "server")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(server_paths.cert, server_paths.key)
    client_context = ssl.create_default_context(cadata=server.ca_pem.decode())
    if client is not None:
        client_paths = client.write(tmp_path / "client", "client")
        server_context.verify_mode = ssl.CERT_REQUIRED
        server_context.load_verify_locations(cadata=(server_trusts or client.ca_pem).decode())
        client_context.load_cert_chain(client_paths.cert, client_paths.key)
    return client_context, server_context


def test_python_ssl_accepts_the_identities(ca: CertificateAuthority, tmp_path: Path):
    server = ca.issue("controller", ["127.0.0.1", "localhost"])
    _handshake(*_contexts(tmp_path / "tls", server, None), "127.0.0.1")
    _handshake(*_contexts(tmp_path / "dns", server, None), "localhost")
    _handshake(*_contexts(tmp_path / "mtls", server, ca.issue("admin", [])), "127.0.0.1")


def test_python_ssl_refuses_another_ca_and_another_host(
    ca: CertificateAuthority, other_ca: CertificateAuthority, tmp_path: Path
):
    server = ca.issue("controller", ["127.0.0.1"])
    client, server_context = _contexts(tmp_path / "a", server, None)
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        _handshake(client, server_context, "127.0.0.2")
    stranger = other_ca.issue("controller", ["127.0.0.1"])
    _, server_context = _contexts(tmp_path / "b", stranger, None)
    trusts_ours = ssl.create_default_context(cadata=ca.ca_pem.decode())
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(trusts_ours, server_context, "127.0.0.1")
    stranger_client = other_ca.issue("admin", [])
    contexts = _contexts(tmp_path / "c", server, stranger_client, server_trusts=ca.ca_pem)
    with pytest.raises(ssl.SSLError, match="certificate verify failed"):
        _handshake(*contexts, "127.0.0.1")


class _Controller(pb_grpc.ControllerServicer):
    async def Heartbeat(self, request, context):  # noqa: N802 (the proto's name)
        peer = context.auth_context().get("x509_common_name", [b""])
        return pb.Ack(ok=True, message=peer[0].decode())


async def _call(
    server_identity: TlsIdentity,
    client_identity: TlsIdentity | None,
    *,
    mutual: bool,
    trusted_ca: bytes | None = None,
) -> str:
    """A heartbeat over TLS from a grpc.aio client to a grpc.aio server on 127.0.0.1."""
    server = grpc.aio.server()
    pb_grpc.add_ControllerServicer_to_server(_Controller(), server)
    credentials = grpc.ssl_server_credentials(
        [(server_identity.key_pem, server_identity.cert_pem)],
        root_certificates=server_identity.ca_pem,
        require_client_auth=mutual,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        channel_credentials = grpc.ssl_channel_credentials(
            trusted_ca or server_identity.ca_pem,
            client_identity.key_pem if client_identity else None,
            client_identity.cert_pem if client_identity else None,
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials) as channel:
            stub = pb_grpc.ControllerStub(channel)
            ack = await stub.Heartbeat(pb.CombinerHeartbeat(combiner_id="a"), timeout=10)
            return ack.message
    finally:
        await server.stop(None)


def test_grpc_accepts_the_identities_with_and_without_mutual_tls(ca: CertificateAuthority):
    server = ca.issue("controller", ["127.0.0.1"])
    assert asyncio.run(_call(server, None, mutual=False)) == ""
    client = ca.issue("combiner-1", [])
    assert asyncio.run(_call(server, client, mutual=True)) == "combiner-1"


def test_grpc_refuses_certificates_of_another_ca(
    ca: CertificateAuthority, other_ca: CertificateAuthority
):
    server = ca.issue("controller", ["127.0.0.1"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a client presenting a stranger's
        asyncio.run(_call(server, other_ca.issue("combiner-1", []), mutual=True))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # mutual TLS without a certificate
        asyncio.run(_call(server, None, mutual=True))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    stranger = other_ca.issue("controller", ["127.0.0.1"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a server our CA did not sign
        asyncio.run(_call(stranger, None, mutual=False, trusted_ca=ca.ca_pem))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
