"""The API that user code implements: a `ClientApp` trains and validates on private data.

User code never sees gRPC, chunks or the controller: it gets parameters as named numpy
arrays and a plain config mapping, and returns arrays, an example count and metrics.

An app has two places for settings of its own, both typed (str, int, float or bool, as
written): the site's, fixed for the process (``ClientContext.settings``, from the
``[settings]`` table of ``strata client start --config site.toml``, with
``ClientContext.data_path``), and the session's, the same at every site (the session
setting ``app_settings``), which arrive in every task's config beside the keys below.

Config keys the runtime sends (all optional for the app to honour):
    ``round`` (int), ``epochs`` (int), ``batch_size`` (int), ``lr`` (float),
    ``seed`` (int), ``proximal_mu`` (float, 0 = plain FedAvg); with SCAFFOLD also
    ``drift_correction`` ("scaffold") and ``participation`` (float), which the runtime
    consumes (`stratafl.client.scaffold`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from stratafl.errors import ConfigError
from stratafl.params import Params
from stratafl.settings import AppSettingValue

Config = Mapping[str, Any]


@dataclass(frozen=True)
class ClientContext:
    """Who this client is and which part of the data it holds.

    ``num_partitions == 1`` means the client holds the whole (pooled) dataset; the launcher
    uses that for the centralised baseline of the promise check.
    """

    client_id: str = "client-0"
    partition_id: int = 0
    num_partitions: int = 1
    partitioner: str = "iid"
    seed: int = 0
    data_path: Path | None = None
    """Where this site keeps its data (``data_path`` of its site file, or ``--data-path``);
    None when not configured, for apps that find their data themselves."""
    settings: Mapping[str, AppSettingValue] = field(default_factory=dict)
    """The site's own settings for the app (its site file's ``[settings]`` table), typed
    as written and read-only: a copy of what was given, which the caller cannot change."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    def __reduce__(self) -> tuple[type[ClientContext], tuple[object, ...]]:
        """Pickled field by field, the settings as a plain dict (a read-only view does not
        pickle): the promise check's baselines hand a context to worker processes."""
        values = [getattr(self, f.name) for f in fields(self)]
        values[-1] = dict(self.settings)
        return (ClientContext, tuple(values))


@dataclass(frozen=True)
class TrainResult:
    """What `ClientApp.train` returns: new parameters, how many examples made them, metrics."""

    params: Params
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class ClientApp(Protocol):
    """What a federated client does with the model it is sent."""

    def initial_params(self, seed: int) -> Params:
        """A freshly initialised model; the seed model of a session comes from here."""
        ...

    def train(self, params: Params, config: Config) -> TrainResult:
        """Train locally starting from ``params`` and return the result."""
        ...

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        """Metrics of ``params`` on this client's held-out data (e.g. accuracy, loss)."""
        ...


def load_app(spec: str, context: ClientContext) -> ClientApp:
    """Load a `ClientApp` from ``"package.module:attr"`` or ``"path/to/file.py:attr"``.

    ``attr`` may be a `ClientApp` instance or a factory ``(ClientContext) -> ClientApp``.
    """
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ConfigError(f"--app {spec!r} must look like 'package.module:attr' or 'file.py:attr'")
    module = _import_target(target)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"--app {spec!r}: module {target!r} has no attribute {attr!r}") from None
    app = obj if isinstance(obj, ClientApp) and not isinstance(obj, type) else obj(context)
    if not isinstance(app, ClientApp):
        raise ConfigError(
            f"--app {spec!r} gave {type(app).__name__}, which lacks initial_params/train/validate"
        )
    return app


def _import_target(target: str) -> Any:
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.exists():
            raise ConfigError(f"--app file {target!r} does not exist (relative to {Path.cwd()})")
        name = f"_strata_app_{path.stem}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise ConfigError(f"--app module {target!r} cannot be imported: {exc}") from exc
