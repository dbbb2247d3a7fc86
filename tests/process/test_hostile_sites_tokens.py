"""Enrolled sites misusing the credentials they were issued (issue 19, the token rows).

One secured federation of real processes on loopback (2 combiners, 2 clients, tokens
issued normally) serves every test of the module; each test plays one row of the issue's
table from this process (the attacker: tests/support/hostile.py):

    a combiner asks a certificate for the controller's names and a wildcard
        -> test_a_combiner_gets_a_certificate_only_for_the_hosts_its_token_allows
    a combiner replays a client's credential at /assign and on another combiner
        -> test_a_clients_ticket_works_only_on_its_combiner_and_never_at_the_controller
    --mutual-tls promised client certificates no one ever checked
        -> test_there_is_no_mutual_tls_flag_and_a_stolen_client_token_gets_nothing
    token defaults (lifetimes, leeway, file modes, the last admin token)
        -> test_tokens_are_short_lived_renewable_and_written_privately (and, last, as it
           must leave an admin standing, test_the_last_admin_token_cannot_be_revoked)
    an all-NaN seed -> test_a_non_finite_seed_is_refused
    /docs from a CDN -> test_no_api_browser_page_is_served
    request rates -> test_one_identity_flooding_the_api_is_held_to_its_own_rate
"""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from cryptography import x509

from stratafl.client.main import ClientOptions
from stratafl.combiner.main import CombinerOptions
from stratafl.errors import AuthError, ConfigError, Conflict, ModelFormatError, PermissionDenied
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.proto import stratafl_pb2 as pb
from stratafl.security import Role, certificate_request, read_claims_unverified
from stratafl.security.files import write_private
from stratafl.settings import SessionConfig
from tests.support.controller_process import running_controller
from tests.support.hostile import (
    Attacker,
    client_token,
    code_of,
    combiner_address,
    drain,
    fedavg_shift,
    run_session_strictly,
    wait_until,
)
from tests.support.paths import TEST_APP

pytestmark = pytest.mark.slow

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DAY = 24 * 3600.0


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    workdir = tmp_path_factory.mktemp("tokens") / "fed"
    spec = FederationSpec(app=TEST_APP, clients=2, combiners=2, workdir=workdir)
    with LocalFederation(spec) as federation:
        federation.wait_for_clients(2)
        yield federation


@pytest.fixture
def attacker(fed: LocalFederation) -> Iterator[Attacker]:
    with Attacker(fed) as attacker:
        yield attacker


def _https(fed: LocalFederation) -> httpx.Client:
    """Plain HTTPS to the controller, trusting the federation's CA, with no token."""
    return httpx.Client(
        base_url=fed.url, verify=ssl.create_default_context(cafile=fed.ca_file), timeout=10
    )


def _probe(client_id: str) -> pb.TaskFailure:
    return pb.TaskFailure(task_id="none", client_id=client_id, reason="probe")


def test_a_combiner_gets_a_certificate_only_for_the_hosts_its_token_allows(fed, attacker):
    token = attacker.token("combiner-7", Role.COMBINER, hosts=("127.0.0.1",))
    csr, _ = certificate_request("combiner-7", [])
    greedy = ["127.0.0.1", "localhost", "ctl.example.org", "*.example.org"]
    with attacker.rest(token) as rest:
        with pytest.raises((PermissionDenied, ConfigError)):
            rest.request_certificate(csr, greedy)
        with pytest.raises(PermissionDenied, match="ctl.example.org"):
            rest.request_certificate(csr, ["127.0.0.1", "ctl.example.org"])
        with pytest.raises(ConfigError, match="wildcard"):
            rest.request_certificate(csr, ["*.example.org"])
        signed = rest.request_certificate(csr, ["127.0.0.1"])
    cert = x509.load_pem_x509_certificate(signed.certificate_pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == []
    # nor can an admin put a wildcard in a combiner's token
    with pytest.raises(ConfigError, match="wildcard"):
        attacker.token("combiner-8", Role.COMBINER, hosts=("*.example.org",))


def test_a_clients_ticket_works_only_on_its_combiner_and_never_at_the_controller(fed, attacker):
    # What a hostile combiner sees of a client: the ticket the client presents to it.
    victim = attacker.token("victim", Role.CLIENT)
    assignment = attacker.assigned(victim)
    own = attacker.combiner(assignment.address, assignment.ticket)
    assert code_of(lambda: own.ReportFailure(_probe("victim"))) == grpc.StatusCode.OK
    claims = read_claims_unverified(assignment.ticket)
    assert (claims.subject, claims.role, claims.audience) == (
        "victim",
        Role.CLIENT,
        assignment.combiner_id,
    )
    assert claims.expires_at - claims.issued_at <= 3600
    # replayed at the controller: refused, in every role the ticket could be tried in
    with attacker.rest(assignment.ticket) as rest:
        with pytest.raises(AuthError, match="ticket"):
            rest.assign()
        with pytest.raises(AuthError, match="ticket"):
            rest.renew_token()
    # replayed on the other combiner: refused, for a stream and for any report
    other = next(c.id for c in fed.client.combiners() if c.id != assignment.combiner_id)
    elsewhere = attacker.combiner(combiner_address(fed, other), assignment.ticket)
    assert drain(elsewhere.TaskStream(pb.ClientHello(), timeout=30)) == ([], UNAUTHENTICATED)
    assert code_of(lambda: elsewhere.ReportFailure(_probe("victim"))) == UNAUTHENTICATED
    # and the honest clients, on tickets of their own, still give the exact FedAvg
    seed = fed.upload_seed_model()
    session, rounds = run_session_strictly(
        fed, SessionConfig(rounds=1, min_clients=2, seed_model_id=seed.id)
    )
    assert session.status == "finished", (session.reason, [r.reason for r in rounds])
    assert sorted(rounds[0].participants) == ["client-0", "client-1"]
    assert session.final_model_id is not None
    params = fed.client.download_params(session.final_model_id)
    np.testing.assert_allclose(params["w"], fedavg_shift([0, 1]), rtol=1e-6)


def test_there_is_no_mutual_tls_flag_and_a_stolen_client_token_gets_nothing(fed, attacker):
    cli = [sys.executable, "-m", "stratafl.cli", "controller", "start", "--mutual-tls", "--help"]
    refused = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "--mutual-tls" in refused.stderr
    docs = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    assert "--mutual-tls" not in docs
    # A client's own token, stolen from its file: no combiner takes it (only tickets).
    stolen = client_token(fed, 0)
    for combiner in fed.client.combiners():
        stub = attacker.combiner(combiner.address, stolen)
        assert drain(stub.TaskStream(pb.ClientHello(), timeout=30)) == ([], UNAUTHENTICATED)
        assert code_of(lambda s=stub: s.ReportFailure(_probe("client-0"))) == UNAUTHENTICATED


def test_tokens_are_short_lived_renewable_and_written_privately(fed, attacker, tmp_path):
    out = tmp_path / "hospital-5.token"
    assert fed.ca_file is not None and fed.admin_token is not None
    admin_file = tmp_path / "admin.token"
    admin_file.write_text(fed.admin_token)
    cli = [sys.executable, "-m", "stratafl.cli", "token", "create", "--role", "client"]
    cli += ["--name", "hospital-5", "--out", str(out), "--controller", fed.url]
    cli += ["--token-file", str(admin_file), "--ca-file", str(fed.ca_file)]
    made = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert made.stdout == ""  # the token went to the file only
    token = out.read_text().strip()
    claims = read_claims_unverified(token)
    assert claims.expires_at - claims.issued_at == DAY
    admin = fed.client.create_token("ops", Role.ADMIN).record
    assert admin.expires_at - admin.issued_at == 30 * DAY
    # a client renews its still-valid token: same id (revocation still reaches it)
    with attacker.rest(token) as rest:
        time.sleep(1.1)  # so the fresh copy's expiry is visibly later (whole seconds apart)
        renewed = rest.renew_token()
    fresh = read_claims_unverified(renewed.token)
    assert fresh.token_id == claims.token_id and fresh.expires_at > claims.expires_at
    assert renewed.record.expires_at == fresh.expires_at
    # a token that expired 10 s ago is refused: the leeway is a few seconds, not 30
    late = attacker.expired_token("hospital-6", Role.CLIENT, ago=10)
    with attacker.rest(late) as rest, pytest.raises(AuthError, match="expired"):
        rest.assign()


def test_a_non_finite_seed_is_refused(fed):
    before = {m.id for m in fed.client.models()}
    for bad in (np.nan, np.inf, -np.inf):
        params = {"w": np.full(4, 1.0, np.float32), "b": np.array([bad], np.float32)}
        with pytest.raises(ModelFormatError, match="NaN or infinite"):
            fed.client.upload_model(params)
    assert {m.id for m in fed.client.models()} == before


def test_no_api_browser_page_is_served(fed):
    with _https(fed) as http:
        for page in ("/docs", "/redoc"):
            answer = http.get(page)
            assert answer.status_code == 404, page
            assert "cdn" not in answer.text.lower()


def test_one_identity_flooding_the_api_is_held_to_its_own_rate(tmp_path):
    # A controller of its own with a small bucket (the defaults, 200/s and bursts of 2,000,
    # behave the same, only later): one identity looping on the API is answered 429 long
    # before 100 requests, whatever the machine's speed; others are served as before.
    rate = ("--rest-rate", "1", "--rest-burst", "20")
    with running_controller(tmp_path, *rate) as controller:

        def token(name: str) -> str:
            return controller.api.create_token(name, Role.COMBINER, hosts=("127.0.0.1",)).token

        hammer = {"authorization": f"Bearer {token('combiner-9')}"}
        tls = ssl.create_default_context(cafile=controller.ca_file)
        with httpx.Client(base_url=controller.url, verify=tls) as http:
            answers = [http.get("/api/v1/discovery", headers=hammer) for _ in range(100)]
            other = http.get(
                "/api/v1/discovery", headers={"authorization": f"Bearer {token('combiner-10')}"}
            )
    limited = [a for a in answers if a.status_code != 200]
    assert limited, "never held to a rate"
    assert {a.status_code for a in limited} == {429}
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].json()["error"] == "RateLimited" and "\n" not in limited[0].json()["detail"]
    assert other.status_code == 200  # another identity is served as before


SHORT_TOKEN_SECONDS = 10.0
"""A token a tier must renew within the test: it renews halfway, at 5 s."""


def test_a_client_and_a_combiner_renew_their_short_tokens_and_keep_working(fed, tmp_path):
    # client-2's token (and so its tickets) and combiner-2's token live 10 s; each
    # renews halfway through, writes the fresh token back to its file (0600), and is
    # still serving after the tokens it started with expired.
    files = {}
    for name, role in (("combiner-2", Role.COMBINER), ("client-2", Role.CLIENT)):
        hosts = ("127.0.0.1",) if role == Role.COMBINER else ()
        issued = fed.client.create_token(name, role, ttl_seconds=SHORT_TOKEN_SECONDS, hosts=hosts)
        files[name] = tmp_path / f"{name}.token"
        write_private(files[name], issued.token.encode())
    first = {name: read_claims_unverified(path.read_text()) for name, path in files.items()}
    combiner = CombinerOptions(
        controller=fed.url,
        combiner_id="combiner-2",
        workdir=fed.workdir / "combiner-2",
        ready_file=fed.group.ready_file("combiner-2"),
        token_file=files["combiner-2"],
        ca_file=fed.ca_file,
    )
    fed.group.start("combiner-2", combiner).wait_ready()
    client = ClientOptions(
        controller=fed.url,
        app=fed.spec.app,
        partition_id=2,
        num_partitions=3,
        token_file=files["client-2"],
        ca_file=fed.ca_file,
        combiner="combiner-2",
    )
    fed.group.start("client-2", client)

    def renewed_and_expired() -> bool:
        now = time.time()
        fresh = {n: read_claims_unverified(p.read_text()) for n, p in files.items()}
        return all(
            fresh[n].expires_at > first[n].expires_at and now > first[n].expires_at + 6
            for n in files
        )

    wait_until(renewed_and_expired, 90, "both tiers to renew and their first tokens to expire")
    for path in files.values():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    wait_until(
        lambda: any(
            c.id == "client-2" and c.combiner_id == "combiner-2" and c.status == "connected"
            for c in fed.client.clients()
        ),
        30,
        "client-2 connected to combiner-2",
    )
    seed = fed.upload_seed_model()
    session, rounds = run_session_strictly(
        fed, SessionConfig(rounds=1, min_clients=3, seed_model_id=seed.id)
    )
    assert session.status == "finished", (session.reason, [r.reason for r in rounds])
    assert sorted(rounds[0].participants) == ["client-0", "client-1", "client-2"]
    fed.kill("client-2")
    fed.kill("combiner-2")


def test_the_last_admin_token_cannot_be_revoked(fed):
    bootstrap = read_claims_unverified(fed.admin_token or "").token_id
    others = [
        t.token_id
        for t in fed.client.tokens()
        if t.role == "admin" and t.token_id != bootstrap and t.revoked_at is None
    ]
    for token_id in others:  # every other admin token goes first
        fed.client.revoke_token(token_id)
    with pytest.raises(Conflict, match="last admin token"):
        fed.client.revoke_token(bootstrap)
    assert fed.client.combiners()  # the bootstrap admin still runs the federation
