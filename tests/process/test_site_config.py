"""A site's own configuration file: `strata client start --config site.toml` runs a client
on its data path and its typed settings, pinned to its own organisation's combiner (an
assignment elsewhere is refused), logging JSON with one line per task and serving its
Prometheus metrics; a session's app settings reach the app's train and validate typed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from stratafl.client.app import ClientContext, load_app
from stratafl.security import Role
from stratafl.settings import SessionConfig
from stratafl.status import ClientStatus, SessionStatus
from tests.support.controller_process import RunningController, running_controller, until
from tests.support.paths import RECORDING_APP
from tests.support.strata import start_strata

pytestmark = pytest.mark.slow

WAIT_SECONDS = 90.0


def _combiner(ctl: RunningController, folder: Path, name: str) -> subprocess.Popen[bytes]:
    token = folder / f"{name}.token"
    token.write_text(ctl.api.create_token(name, Role.COMBINER, hosts=("127.0.0.1",)).token)
    return start_strata(
        "combiner",
        "start",
        "--controller",
        ctl.url,
        "--token-file",
        str(token),
        "--ca-file",
        str(ctl.ca_file),
        "--workdir",
        str(folder / name),
        log=folder / f"{name}.log",
    )


def _site_file(ctl: RunningController, site: Path) -> Path:
    (site / "data").mkdir(parents=True)
    (site / "site-1.token").write_text(ctl.api.create_token("site-1", Role.CLIENT).token)
    path = site / "site.toml"
    path.write_text(
        f"""
controller = "{ctl.url}"
app = "{RECORDING_APP}"
data_path = "data"                 # relative to this file
token_file = "site-1.token"
ca_file = "{ctl.ca_file}"
combiners = ["edge-b"]
log_format = "json"
metrics_port = 0

[settings]
cohort = "a"
max_epochs = 5
scale = 0.5
strict = true
"""
    )
    return path


def _json_lines(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _connected_to(ctl: RunningController, combiner: str) -> bool:
    clients = ctl.api.clients()
    return any(c.status == ClientStatus.CONNECTED and c.combiner_id == combiner for c in clients)


def test_a_site_file_runs_a_client_on_its_own_combiner_with_its_settings(tmp_path):
    with running_controller(tmp_path) as ctl:
        processes = [_combiner(ctl, tmp_path, "edge-a")]
        try:
            until(lambda: ctl.api.combiners(), WAIT_SECONDS, "edge-a")
            site = tmp_path / "site"
            log = tmp_path / "site-1.log"
            processes.append(
                start_strata("client", "start", "--config", str(_site_file(ctl, site)), log=log)
            )

            # Only edge-a serves: the controller assigns it, and the site refuses it.
            refusal = "assigned to edge-a, which this site does not accept (combiners: edge-b)"
            until(lambda: refusal in log.read_text(), WAIT_SECONDS, "the client to refuse edge-a")
            assert not _connected_to(ctl, "edge-a")
            processes.append(_combiner(ctl, tmp_path, "edge-b"))
            until(lambda: _connected_to(ctl, "edge-b"), WAIT_SECONDS, "the client on edge-b")

            app = load_app(RECORDING_APP, ClientContext(data_path=tmp_path))
            ctl.api.upload_model(app.initial_params(0))
            session_settings = {"custom_key": 1, "tag": "x", "ratio": 0.25, "flag": False}
            config = SessionConfig(rounds=1, min_clients=1, app_settings=session_settings)
            session = ctl.api.start_session(config)
            done = until(
                lambda: (s := ctl.api.session(session.id)).status != SessionStatus.RUNNING and s,
                WAIT_SECONDS,
                "the session",
            )
            assert done.status == SessionStatus.FINISHED, done.reason
            until(
                lambda: "validate" in (site / "data" / "seen.json").read_text(),
                WAIT_SECONDS,
                "validation",
            )

            # The site's settings and data path reached the app, typed as written; the
            # session's app settings arrived in both configs, typed as sent.
            seen = json.loads((site / "data" / "seen.json").read_text())
            assert seen["data_path"] == str((site / "data").resolve())
            assert seen["settings"] == {
                "cohort": "a",
                "max_epochs": 5,
                "scale": 0.5,
                "strict": True,
            }
            assert [type(v) for v in seen["settings"].values()] == [str, int, float, bool]
            for kind in ("train", "validate"):
                got = {key: seen[kind][key] for key in session_settings}
                assert got == session_settings, kind
                assert type(seen[kind]["custom_key"]) is int and type(seen[kind]["flag"]) is bool

            # One JSON line per task, with its fields.
            lines = _json_lines(log)
            tasks = [line for line in lines if line.get("kind") in ("train", "validate")]
            assert sorted((t["kind"], t["session"], t["round"]) for t in tasks) == [
                ("train", session.id, 1),
                ("validate", session.id, 1),
            ]
            trained = next(t for t in tasks if t["kind"] == "train")
            assert trained["examples"] == 10 and trained["metrics"] == {"shift": 1.0}
            assert isinstance(trained["seconds"], float)

            # Its /metrics: plain HTTP on loopback (it has no certificate), admin token only.
            said = next(
                str(line["message"])
                for line in lines
                if "client metrics at" in str(line["message"])
            )
            url = said.rsplit(" ", 1)[1]
            assert url.startswith("http://127.0.0.1:")
            assert httpx.get(url, timeout=10).status_code == 401
            client_token = (site / "site-1.token").read_text().strip()
            as_client = {"Authorization": f"Bearer {client_token}"}
            assert httpx.get(url, headers=as_client, timeout=10).status_code == 403
            admin = {"Authorization": f"Bearer {ctl.admin_token_file.read_text().strip()}"}
            scraped = httpx.get(url, headers=admin, timeout=10)
            assert scraped.status_code == 200
            assert 'stratafl_client_tasks_total{kind="train"} 1.0' in scraped.text
            assert "stratafl_client_examples_total 10.0" in scraped.text
            assert "stratafl_client_protocol_connected 1.0" in scraped.text
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
