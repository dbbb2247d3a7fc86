"""App packages end to end, with real processes: the example app built as a wheel and
published to the controller, a session naming it by digest, clients whose site allows
the digest install it into their own folder and train with it, a client whose site does
not refuses with one line, and bytes that do not match their digest are refused."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from stratafl.client.app import ClientContext, load_app
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.settings import SessionConfig
from stratafl.status import OutcomeStatus, RoundStatus, SessionStatus
from tests.support.paths import EXAMPLES, TEST_APP

pytestmark = pytest.mark.slow

ENTRY = "minimal_app:make_app"


def _wheel(folder: Path) -> Path:
    """The example app as a wheel, built offline from a copy of its folder."""
    source = folder / "source"
    source.mkdir()
    for name in ("minimal_app.py", "pyproject.toml"):
        (source / name).write_bytes((EXAMPLES / "minimal_app" / name).read_bytes())
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "-w", str(folder / "dist"), str(source)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    (wheel,) = (folder / "dist").glob("minimal_app-*.whl")
    return wheel


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _session(sha256: str) -> SessionConfig:
    return SessionConfig(
        rounds=1,
        min_clients=2,
        round_timeout=120,
        wait_for_clients_seconds=60,
        max_failed_rounds=0,
        app_sha256=sha256,
        app_entry=ENTRY,
    )


def test_a_published_package_runs_where_its_digest_is_allowed_and_only_there(tmp_path):
    wheel = _wheel(tmp_path)
    tampered = tmp_path / "tampered" / wheel.name  # another package, whose stored bytes
    tampered.parent.mkdir()  # will not match the digest it was published under
    tampered.write_bytes(wheel.read_bytes() + b"\0")
    good, bad = _sha256(wheel), _sha256(tampered)
    spec = FederationSpec(
        app=TEST_APP,  # each client's own app: not the one the sessions name
        clients=3,
        combiners=1,
        workdir=tmp_path / "fed",
        allowed_apps={0: (good, bad), 1: (good, bad)},  # client-2's site allows none
    )
    seed = load_app(str(EXAMPLES / "minimal_app" / "minimal_app.py") + ":make_app", ClientContext())
    with LocalFederation(spec) as federation:
        api = federation.client
        assert api.publish_app(wheel).sha256 == good
        assert api.publish_app(tampered).sha256 == bad
        assert {(a.sha256, a.filename) for a in api.apps()} == {
            (good, wheel.name),
            (bad, wheel.name),
        }
        stored = spec.workdir / "controller" / "models" / "apps" / bad / wheel.name
        stored.write_bytes(b"not the package its digest names")
        api.upload_model(seed.initial_params(0))
        federation.wait_for_clients(3)

        session, rounds = federation.run_session(_session(good))
        assert session.status == SessionStatus.FINISHED, session.reason
        (round_,) = rounds
        outcomes = {o.client_id: o for o in round_.outcomes}
        assert {c for c, o in outcomes.items() if o.status == OutcomeStatus.OK} == {
            "client-0",
            "client-1",
        }
        assert outcomes["client-2"].status == OutcomeStatus.FAILED
        assert outcomes["client-2"].reason == (
            f"app package {good} is not allowed at this site: if you trust it, start the "
            f"client with --allow-app {good}"
        )
        assert (round_.validation.mean("accuracy") or 0) > 0.5  # the app's own scores
        assert (spec.workdir / "client-0" / "apps" / good / "minimal_app.py").is_file()

        session, rounds = federation.run_session(_session(bad))
        assert session.status == SessionStatus.FAILED
        (round_,) = rounds
        assert round_.status == RoundStatus.FAILED
        reasons = {o.client_id: o.reason for o in round_.outcomes}
        for client in ("client-0", "client-1"):
            assert reasons[client].startswith("app package refused: its bytes have SHA-256 ")
            assert reasons[client].endswith(
                f"not {bad}; the controller's copy is not the package the session names"
            )
        assert not (spec.workdir / "client-0" / "apps" / bad).exists()
