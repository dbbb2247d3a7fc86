"""`strata run`: a whole federation on loopback as separate processes, one session, a report."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from stratafl.client.app import ClientContext, load_app
from stratafl.errors import StrataError, UnavailableError
from stratafl.modelfile import load_params, params_to_bytes
from stratafl.params import Params
from stratafl.settings import SessionConfig
from stratafl.sim.processes import ProcessGroup, controller_info

Progress = Callable[[dict[str, Any], list[dict[str, Any]]], None]
"""Called with the session and its rounds so far, whenever they change."""


@dataclass
class FederationSpec:
    """A local federation and the session to run on it."""

    app: str
    clients: int = 10
    combiners: int = 2
    partition: str = "iid"
    seed: int = 0
    max_clients_per_combiner: int = 1000
    workdir: Path | None = None
    database_url: str | None = None  # default: SQLite in the controller's work folder


class LocalFederation:
    """Controller, combiners and clients as processes on loopback; a context manager."""

    def __init__(self, spec: FederationSpec) -> None:
        self.spec = spec
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = spec.workdir or Path(".")
        self.group = ProcessGroup(self.workdir)
        self.url = ""
        self.grpc_address = ""
        self._http: httpx.Client | None = None

    def __enter__(self) -> LocalFederation:
        if self.spec.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="strata-run-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.group = ProcessGroup(self.workdir)
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._http is not None:
            self._http.close()
        self.group.stop_all()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _start(self) -> None:
        spec = self.spec
        self._start_controller(http_port=0, grpc_port=0)
        combiners = [
            self.group.start(
                f"combiner-{i}",
                [
                    "combiner",
                    "start",
                    "--controller",
                    self.url,
                    "--id",
                    f"combiner-{i}",
                    "--max-clients",
                    str(spec.max_clients_per_combiner),
                    "--workdir",
                    str(self.workdir / f"combiner-{i}"),
                ],
            )
            for i in range(spec.combiners)
        ]
        for tier in combiners:
            tier.wait_ready()
        for i in range(spec.clients):
            self.start_client(i)

    def _start_controller(self, http_port: int, grpc_port: int) -> None:
        controller = self.group.start(
            "controller",
            [
                "controller",
                "start",
                "--port",
                str(http_port),
                "--grpc-port",
                str(grpc_port),
                "--workdir",
                str(self.workdir / "controller"),
                *(["--database-url", self.spec.database_url] if self.spec.database_url else []),
            ],
        )
        info = controller_info(controller.wait_ready())
        self.url, self.grpc_address = info["url"], info["grpc_address"]

    def restart_controller(self) -> None:
        """kill -9 the controller and start a new one on the same ports and work folder."""
        old = next(t for t in self.group.tiers if t.name == "controller")
        old.kill()
        self.group.tiers.remove(old)
        if self._http is not None:
            self._http.close()
            self._http = None
        http_port = int(self.url.rsplit(":", 1)[1])
        grpc_port = int(self.grpc_address.rsplit(":", 1)[1])
        self._start_controller(http_port, grpc_port)

    def start_client(self, index: int) -> None:
        spec = self.spec
        self.group.start(
            f"client-{index}",
            [
                "client",
                "start",
                "--controller",
                self.url,
                "--app",
                spec.app,
                "--id",
                f"client-{index}",
                "--partition-id",
                str(index),
                "--num-partitions",
                str(spec.clients),
                "--partitioner",
                spec.partition,
                "--seed",
                str(spec.seed),
            ],
            ready=False,
        )

    def _client(self) -> httpx.Client:
        if self._http is None:  # one client: building an SSL context per request costs ~30 ms
            self._http = httpx.Client(base_url=f"{self.url}/api/v1", timeout=60)
        return self._http

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._client().request(method, path, **kwargs)
        if response.status_code >= 400:
            raise StrataError(
                f"{method} {path} failed with {response.status_code}: {response.text}"
            )
        return response.json()

    def wait_for_clients(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            connected = [c for c in self.api("GET", "/clients") if c["status"] == "connected"]
            if len(connected) >= count:
                return
            for tier in self.group.tiers:
                if tier.process.poll() is not None and tier.name.startswith("client"):
                    raise UnavailableError(f"{tier.name} exited early; see {tier.log_path}")
            time.sleep(0.1)
        raise UnavailableError(
            f"only {len(connected)} of {count} clients connected in {timeout:g} s"
        )

    def upload_seed_model(self) -> str:
        app = load_app(self.spec.app, ClientContext(num_partitions=1, seed=self.spec.seed))
        return self.upload_params(app.initial_params(self.spec.seed))

    def upload_params(self, params: Params) -> str:
        """Store ``params`` as a seed model; returns its id."""
        return str(self.api("POST", "/models", content=params_to_bytes(params))["id"])

    def download_params(self, model_id: str) -> Params:
        """A stored model, fetched over the REST API like any user would."""
        path = self.workdir / f"{model_id}.safetensors"
        with self._client().stream("GET", f"/models/{model_id}/download") as response:
            if response.status_code != 200:
                raise StrataError(
                    f"model {model_id} could not be downloaded: {response.status_code}"
                )
            with open(path, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        try:
            return load_params(path)
        finally:
            path.unlink(missing_ok=True)

    def run_session(
        self, config: SessionConfig, progress: Progress | None = None, poll_seconds: float = 0.2
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        session = self.api("POST", "/sessions", json=config.model_dump())
        rounds: list[dict[str, Any]] = []
        while True:
            session = self.api("GET", f"/sessions/{session['id']}")
            finished = session["status"] != "running"
            # A round is recorded before rounds_done moves past it, and a failed round ends
            # the session: the rounds need reading only when the count moved, and at the end.
            if finished or session["rounds_done"] > len(rounds):
                latest = self.api("GET", f"/sessions/{session['id']}/rounds")
                if progress is not None and len(latest) != len(rounds):
                    progress(session, latest)
                rounds = latest
            if finished:
                return session, rounds
            time.sleep(poll_seconds)
