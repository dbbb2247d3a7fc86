"""A client stops on a refusal no retry can mend, with one line that says what to fix and
a non-zero exit: a CA that does not verify the controller, a token of another role, a
revoked or expired token, ``http://`` against a controller that speaks HTTPS. One real
controller process serves the module; each client is a real `strata client start`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stratafl.security import CertificateAuthority, Role, TokenSigner, read_claims_unverified
from tests.support.controller_process import RunningController, exited, running_controller
from tests.support.paths import TEST_APP
from tests.support.strata import start_strata

pytestmark = pytest.mark.slow

HANG_GUARD_SECONDS = 90.0


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory):
    with running_controller(tmp_path_factory.mktemp("stops")) as running:
        yield running


def _token(controller: RunningController, folder: Path, name: str, role: Role) -> Path:
    hosts = ("127.0.0.1",) if role == Role.COMBINER else ()
    path = folder / f"{name}.token"
    path.write_text(controller.api.create_token(name, role, hosts=hosts).token)
    return path


def _stopped_client(
    folder: Path, name: str, url: str, token_file: Path, ca_file: Path
) -> tuple[int, list[str]]:
    """Run a client to its end: its exit code and its lines that start with ``error:``."""
    log = folder / f"{name}.log"
    process = start_strata(
        "client",
        "start",
        "--controller",
        url,
        "--app",
        TEST_APP,
        "--token-file",
        str(token_file),
        "--ca-file",
        str(ca_file),
        log=log,
    )
    code = exited(process, HANG_GUARD_SECONDS, log)
    text = log.read_text()
    assert "Traceback" not in text, text
    return code, [line for line in text.splitlines() if line.startswith("error:")]


def test_a_client_trusting_another_ca_stops_and_names_the_ca_flags(controller, tmp_path):
    stranger = CertificateAuthority.load_or_create(tmp_path / "another-federation")
    token = _token(controller, tmp_path, "wrong-ca", Role.CLIENT)
    code, errors = _stopped_client(
        tmp_path, "wrong-ca", controller.url, token, tmp_path / "another-federation" / "ca.crt"
    )
    assert stranger.ca_pem
    assert code != 0
    assert len(errors) == 1 and "do not verify" in errors[0], errors
    assert "--ca-file" in errors[0] and "--ca-bundle" in errors[0]


def test_a_client_with_a_combiners_token_stops(controller, tmp_path):
    token = _token(controller, tmp_path, "edge-x", Role.COMBINER)
    code, errors = _stopped_client(tmp_path, "role", controller.url, token, controller.ca_file)
    assert code != 0
    assert len(errors) == 1 and "combiner token may not call" in errors[0], errors


def test_a_client_whose_token_was_revoked_stops(controller, tmp_path):
    token = _token(controller, tmp_path, "revoked", Role.CLIENT)
    controller.api.revoke_token(read_claims_unverified(token.read_text()).token_id)
    code, errors = _stopped_client(tmp_path, "revoked", controller.url, token, controller.ca_file)
    assert code != 0
    assert len(errors) == 1 and "revoked" in errors[0], errors


def test_a_client_whose_token_expired_stops(controller, tmp_path):
    # signed with the controller's own key an hour ago, for a minute: a real, dead token
    signer = TokenSigner.load_or_create(controller.trust / "token-signing.key")
    token, _ = signer.issue("expired", Role.CLIENT, 60, now=time.time() - 3600)
    path = tmp_path / "expired.token"
    path.write_text(token)
    code, errors = _stopped_client(tmp_path, "expired", controller.url, path, controller.ca_file)
    assert code != 0
    assert len(errors) == 1 and "expired" in errors[0], errors


def test_a_client_dialling_http_at_an_https_controller_stops(controller, tmp_path):
    token = _token(controller, tmp_path, "plain", Role.CLIENT)
    plain = controller.url.replace("https://", "http://")
    code, errors = _stopped_client(tmp_path, "plain", plain, token, controller.ca_file)
    assert code != 0
    assert len(errors) == 1, errors
    assert f"use {controller.url}" in errors[0], errors
