"""An organisation's own certificates: the controller and a combiner serve certificates an
organisation's CA issued (made here with `cryptography`, not stratafl's CA), a client that
trusts only that CA's bundle trains a round through them, tokens still required, and a
client that trusts only the federation's CA stops with a line naming the fix."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from stratafl.client.app import ClientContext, load_app
from stratafl.security import Role
from stratafl.settings import SessionConfig
from stratafl.status import ClientStatus, SessionStatus
from tests.support.controller_process import exited, running_controller, until
from tests.support.organisation_pki import OrganisationCA
from tests.support.paths import TEST_APP
from tests.support.strata import start_strata

pytestmark = pytest.mark.slow

HANG_GUARD_SECONDS = 90.0


def _served_certificate(address: str, bundle: Path) -> x509.Certificate:
    """The certificate ``address`` presents, verified against ``bundle`` (TLS with ALPN h2,
    as gRPC speaks it)."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(bundle))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_a_federation_on_an_organisations_certificates(tmp_path):
    org = OrganisationCA.create()
    bundle = org.write_bundle(tmp_path / "org-ca.pem")
    ctl_cert, ctl_key = org.issue(tmp_path, "controller", ["127.0.0.1", "localhost"])
    edge_cert, edge_key = org.issue(tmp_path, "edge-org", ["127.0.0.1"])
    elsewhere_cert, elsewhere_key = org.issue(tmp_path, "elsewhere", ["edge.example.org"])
    local_cert, local_key = org.issue(tmp_path, "local", ["localhost"])
    site_cert, site_key = org.issue(tmp_path, "site-1", ["127.0.0.1"])
    own = ("--tls-cert", str(ctl_cert), "--tls-key", str(ctl_key), "--ca-bundle", str(bundle))
    with running_controller(tmp_path, *own, verify=bundle) as ctl:
        api = ctl.api
        tokens = {}
        for name, role in [("edge-org", Role.COMBINER), ("site-1", Role.CLIENT)]:
            tokens[name] = tmp_path / f"{name}.token"
            hosts = ("127.0.0.1",) if role == Role.COMBINER else ()
            tokens[name].write_text(api.create_token(name, role, hosts=hosts).token)
        combiner_log = tmp_path / "edge-org.log"

        def combiner(*args: str, log: Path):
            return start_strata(
                "combiner",
                "start",
                "--controller",
                ctl.url,
                "--token-file",
                str(tokens["edge-org"]),
                "--ca-bundle",
                str(bundle),
                "--workdir",
                str(tmp_path / "edge-org"),
                *args,
                log=log,
            )

        # A certificate that does not name the host peers dial stops the combiner at start.
        wrong = tmp_path / "wrong-host.log"
        refused = combiner(
            "--tls-cert", str(elsewhere_cert), "--tls-key", str(elsewhere_key), log=wrong
        )
        assert exited(refused, HANG_GUARD_SECONDS, wrong) != 0
        assert "names edge.example.org, not 127.0.0.1" in wrong.read_text()

        # A certificate the controller did not sign still buys no host the token does not
        # name: the controller refuses to register the combiner there.
        squat = tmp_path / "squat.log"
        squatter = combiner(
            "--tls-cert",
            str(local_cert),
            "--tls-key",
            str(local_key),
            "--advertise-address",
            "localhost",
            log=squat,
        )
        try:
            until(
                lambda: (
                    "host 'localhost' is not one the token of edge-org names" in squat.read_text()
                ),
                HANG_GUARD_SECONDS,
                "the controller to refuse the squatting address",
            )
        finally:
            squatter.terminate()
            squatter.wait(30)
        assert api.combiners() == []

        processes = [
            combiner("--tls-cert", str(edge_cert), "--tls-key", str(edge_key), log=combiner_log)
        ]
        try:
            listed = until(
                lambda: [c for c in api.combiners() if c.status == "online"], 60, "the combiner"
            )
            served = _served_certificate(listed[0].address, bundle)
            assert served.issuer == org.cert.subject  # the organisation's, not one we signed

            client_log = tmp_path / "site-1.log"
            processes.append(
                start_strata(
                    "client",
                    "start",
                    "--controller",
                    ctl.url,
                    "--app",
                    TEST_APP,
                    "--token-file",
                    str(tokens["site-1"]),
                    "--ca-bundle",
                    str(bundle),
                    "--metrics-port",
                    "0",
                    "--tls-cert",
                    str(site_cert),
                    "--tls-key",
                    str(site_key),
                    log=client_log,
                )
            )
            until(
                lambda: any(c.status == ClientStatus.CONNECTED for c in api.clients()),
                60,
                "the client to connect",
            )
            app = load_app(TEST_APP, ClientContext())
            api.upload_model(app.initial_params(0))
            session = api.start_session(SessionConfig(rounds=1, min_clients=1))
            done = until(
                lambda: (s := api.session(session.id)).status != SessionStatus.RUNNING and s,
                120,
                "the session",
            )
            assert done.status == SessionStatus.FINISHED, done.reason
            assert api.rounds(session.id)[0].outcomes[0].client_id == "site-1"

            # The client serves /metrics over TLS with its organisation's certificate.
            said = [  # the newest: a client that reconnected serves on a fresh loop
                line for line in client_log.read_text().splitlines() if "client metrics at" in line
            ][-1]
            url = said.rsplit(" ", 1)[1]
            assert url.startswith("https://127.0.0.1:")
            admin = {"Authorization": f"Bearer {ctl.admin_token_file.read_text().strip()}"}
            scraped = httpx.get(
                url, headers=admin, verify=ssl.create_default_context(cafile=bundle)
            )
            assert scraped.status_code == 200, (url, scraped.text[:300])
            assert 'stratafl_client_tasks_total{kind="train"} 1.0' in scraped.text

            # A client that trusts only the federation's CA cannot verify the controller.
            ours = tmp_path / "ours-only.log"
            stray = start_strata(
                "client",
                "start",
                "--controller",
                ctl.url,
                "--app",
                TEST_APP,
                "--token-file",
                str(tokens["site-1"]),
                "--ca-file",
                str(ctl.ca_file),
                log=ours,
            )
            assert exited(stray, HANG_GUARD_SECONDS, ours) != 0
            errors = [line for line in ours.read_text().splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and "do not verify" in errors[0], errors
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
