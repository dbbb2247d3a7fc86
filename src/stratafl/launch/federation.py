"""A whole federation on loopback: the tiers as separate processes, driven over REST."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stratafl.attacks import parse_attack_plan
from stratafl.client.app import ClientContext, load_app
from stratafl.client.main import ClientOptions
from stratafl.combiner.main import CombinerOptions
from stratafl.controller.main import ControllerOptions
from stratafl.errors import ConfigError, StrataError, UnavailableError
from stratafl.launch.processes import ProcessGroup, Tier, last_log_line
from stratafl.records import ModelRecord, RoundRecord
from stratafl.restapi import ControllerClient
from stratafl.restapi.schema import IssuedRole, Session
from stratafl.security import Role
from stratafl.security.files import read_token
from stratafl.settings import SessionConfig
from stratafl.status import ClientStatus, SessionStatus
from stratafl.transport.credentials import INSECURE, PeerCredentials

Progress = Callable[[Session, list[RoundRecord]], None]
"""Called with the session and its rounds so far, whenever a round was recorded."""

REST_TIMEOUT_SECONDS = 60.0
COMBINER_HOSTS = ("127.0.0.1",)
"""Where local combiners serve: the only host their tokens let them name in a certificate."""


@dataclass
class FederationSpec:
    """A local federation and the session to run on it."""

    app: str
    clients: int = 10
    combiners: int = 2
    partition: str = "iid"
    seed: int = 0
    max_clients_per_combiner: int | None = None  # None: what the machine allows
    workdir: Path | None = None
    database_url: str | None = None  # default: SQLite in the controller's work folder
    model_store: str | None = None  # a folder or an fsspec URL; default: in its work folder
    insecure: bool = False  # no TLS and no tokens (loopback only); by default all is secured
    mlflow: str | None = None  # an MLflow tracking URI: the controller logs each session there
    keep_every_model: bool = False  # no retention: every round's model stays downloadable
    attacks: Mapping[int, str] = field(default_factory=dict)
    """Partition id -> the attack spec that client runs (`stratafl.attacks`), e.g.
    ``{0: "sign_flip"}``; the other clients are honest."""
    allowed_apps: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    """Partition id -> the SHA-256 of the app packages that client's site runs
    (`ClientOptions.allowed_apps`); the other clients run none."""
    placement: Mapping[int, int] = field(default_factory=dict)
    """Partition id -> the index of the combiner that client asks for (``combiner-<i>``),
    e.g. to put every attacker on one combiner. The controller honours it while that
    combiner has room (`max_clients_per_combiner`) and never moves a placed client; the
    clients not named here are assigned and evened out as usual."""

    def __post_init__(self) -> None:
        parse_attack_plan(self.attacks, self.clients)  # a bad spec fails before anything starts
        for partition_id, combiner in self.placement.items():
            if not (0 <= partition_id < self.clients and 0 <= combiner < self.combiners):
                raise ConfigError(
                    f"placement {partition_id} -> {combiner} is out of range; give client ids "
                    f"0..{self.clients - 1} and combiner indexes 0..{self.combiners - 1}"
                )


class LocalFederation:
    """Controller, combiners and clients as processes on loopback; a context manager.

    Inside the ``with`` block, `client` is a `ControllerClient` of the running controller.
    """

    def __init__(self, spec: FederationSpec) -> None:
        self.spec = spec
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir = spec.workdir or Path(".")
        self.group = ProcessGroup(self.workdir)
        self.url = ""
        self.grpc_address = ""
        self._client: ControllerClient | None = None
        self.ca_file: Path | None = None
        """The federation's CA certificate (None when insecure)."""
        self.admin_token: str | None = None

    @property
    def client(self) -> ControllerClient:
        """The REST client of the federation's controller."""
        if self._client is None:
            raise StrataError("the federation is not running: use it in a `with` block")
        return self._client

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
        self._close_client()
        self.group.stop_all()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _start(self) -> None:
        self._start_controller(http_port=0, grpc_port=0)
        combiners = [self.start_combiner(i) for i in range(self.spec.combiners)]
        for tier in combiners:
            tier.wait_ready()
        for i in range(self.spec.clients):
            self.start_client(i)

    def start_combiner(self, index: int) -> Tier:
        """Start combiner ``index`` (its id, work folder and token are the same at every
        start, as after an operator's restart); `Tier.wait_ready` waits until it registered."""
        name = f"combiner-{index}"
        existing = self.workdir / "tokens" / f"{name}.token"
        options = CombinerOptions(
            controller=self.url,
            combiner_id=name,
            max_clients=self.spec.max_clients_per_combiner,
            workdir=self.workdir / name,
            ready_file=self.group.ready_file(name),
            token_file=existing if existing.exists() else self.token_file(name, Role.COMBINER),
            ca_file=self.ca_file,
            insecure=self.spec.insecure,
        )
        return self.group.start(name, options)

    def kill(self, name: str) -> None:
        """kill -9 the tier called ``name`` (a crash: no chance to clean up)."""
        tier = next(t for t in self.group.tiers if t.name == name)
        tier.kill()
        self.group.tiers.remove(tier)
        if name == "controller":
            self._close_client()  # its pooled connections went to the dead process

    def restart_combiner(self, index: int) -> None:
        """kill -9 combiner ``index`` and start it again with the same id and work folder."""
        self.kill(f"combiner-{index}")
        self.start_combiner(index).wait_ready()

    def _start_controller(self, http_port: int, grpc_port: int) -> None:
        options = ControllerOptions(
            workdir=self.workdir / "controller",
            http_port=http_port,
            grpc_port=grpc_port,
            database_url=self.spec.database_url,
            model_store=self.spec.model_store,
            ready_file=self.group.ready_file("controller"),
            insecure=self.spec.insecure,
            mlflow=self.spec.mlflow,
        )
        if self.spec.keep_every_model:
            options = dataclasses.replace(options, keep_last=0, keep_every=0)
        info = json.loads(self.group.start("controller", options).wait_ready())
        self.url, self.grpc_address = info["url"], info["grpc_address"]
        if info.get("ca_file"):
            self.ca_file = Path(info["ca_file"])
            self.admin_token = read_token(Path(info["admin_token_file"]))
        self._client = ControllerClient(
            self.url,
            timeout=REST_TIMEOUT_SECONDS,
            token=self.admin_token,
            verify=self.ca_file or True,
        )

    def token_file(
        self, name: str, role: IssuedRole, *, max_examples: int | None = None
    ) -> Path | None:
        """Issue a token for ``name`` (its subject) and write it to a private file, as an
        admin would hand it over; None for an insecure federation."""
        if self.spec.insecure:
            return None
        hosts = COMBINER_HOSTS if role == Role.COMBINER else ()
        issued = self.client.create_token(name, role, max_examples=max_examples, hosts=hosts)
        path = self.workdir / "tokens" / f"{name}.token"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        path.write_text(issued.token)
        return path

    def log_path(self, name: str) -> Path:
        """The log file of the tier called ``name`` (``controller``, ``client-3``, ...)."""
        return self.group.log_path(name)

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def restart_controller(self, *, new_grpc_port: bool = False) -> None:
        """kill -9 the controller and start a new one on the same REST port and work
        folder; its gRPC port stays too, unless ``new_grpc_port`` (then a free one)."""
        self.kill("controller")
        self.start_controller(new_grpc_port=new_grpc_port)

    def start_controller(self, *, new_grpc_port: bool = False) -> None:
        """Start the controller again after `kill` ("controller"), on the same REST port."""
        http_port = int(self.url.rsplit(":", 1)[1])
        grpc_port = 0 if new_grpc_port else int(self.grpc_address.rsplit(":", 1)[1])
        self._start_controller(http_port, grpc_port)

    def start_client(self, index: int) -> None:
        spec = self.spec
        options = ClientOptions(
            controller=self.url,
            app=spec.app,
            client_id=f"client-{index}",
            partition_id=index,
            num_partitions=spec.clients,
            partitioner=spec.partition,
            seed=spec.seed,
            token_file=self._client_token(index),
            ca_file=self.ca_file,
            insecure=spec.insecure,
            attack=spec.attacks.get(index),
            combiner=f"combiner-{spec.placement[index]}" if index in spec.placement else None,
            workdir=self.workdir / f"client-{index}",
            allowed_apps=tuple(spec.allowed_apps.get(index, ())),
        )
        self.group.start(f"client-{index}", options)

    def credentials(self, name: str) -> PeerCredentials:
        """What an in-process client called ``name`` dials with (a token of its own)."""
        token_file = self.token_file(name, Role.CLIENT)
        if token_file is None:
            return INSECURE
        return PeerCredentials.from_files(token_file, self.ca_file, "client")

    def _client_token(self, index: int) -> Path | None:
        """A client keeps its token across restarts, as a real one would."""
        existing = self.workdir / "tokens" / f"client-{index}.token"
        if existing.exists():
            return existing
        return self.token_file(f"client-{index}", Role.CLIENT)

    def wait_for_clients(self, count: int, timeout: float = 120.0) -> None:
        """Wait until ``count`` clients hold a task stream to a combiner."""
        deadline = time.monotonic() + timeout
        connected = 0
        while time.monotonic() < deadline:
            clients = self.client.clients()
            connected = sum(c.status == ClientStatus.CONNECTED for c in clients)
            if connected >= count:
                return
            for tier in self.group.tiers:
                if tier.process.poll() is not None and tier.name.startswith("client"):
                    said = last_log_line(tier.log_path)
                    raise UnavailableError(
                        f"{tier.name} exited early{f' ({said})' if said else ''}; "
                        f"see {tier.log_path}"
                    )
            time.sleep(0.1)
        raise UnavailableError(f"only {connected} of {count} clients connected in {timeout:g} s")

    def upload_seed_model(self) -> ModelRecord:
        """Store the app's freshly initialised model: the seed of the next session."""
        app = load_app(self.spec.app, ClientContext(num_partitions=1, seed=self.spec.seed))
        return self.client.upload_model(app.initial_params(self.spec.seed))

    def run_session(
        self, config: SessionConfig, progress: Progress | None = None, poll_seconds: float = 0.2
    ) -> tuple[Session, list[RoundRecord]]:
        """Start a session and follow it to its end; returns it and its rounds."""
        session = self.client.start_session(config)
        rounds: list[RoundRecord] = []
        while True:
            session = self.client.session(session.id)
            finished = session.status != SessionStatus.RUNNING
            # A round is recorded before rounds_done moves past it, and a failed round ends
            # the session: the rounds need reading only when the count moved, and at the end.
            if finished or session.rounds_done > len(rounds):
                latest = self.client.rounds(session.id)
                if progress is not None and len(latest) != len(rounds):
                    progress(session, latest)
                rounds = latest
            if finished:
                return session, rounds
            time.sleep(poll_seconds)
