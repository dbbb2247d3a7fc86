"""Typed configuration at the edges: what a session asks of the federation."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from stratafl.aggregate import Aggregator, parse_aggregator
from stratafl.aggregate.fedavg import require_partial_updates
from stratafl.aggregate.server_state import FEDDYN_PREFIX, SCAFFOLD_PREFIX
from stratafl.compression import (
    NONE,
    Compression,
    PartialUpdates,
    parse_compression,
    parse_partial_updates,
)
from stratafl.errors import ConfigError

MAX_COUNT = 100_000
"""The most rounds, clients or clients per round a session may ask for."""
MAX_SEED = 2**43
"""Round seeds (``seed * 1_000_003 + round``) travel as int64 and seed numpy's
SeedSequence, which takes no negative numbers: 0 <= seed <= 2**43 keeps both true."""
MAX_EXAMPLES = 2**53
"""Example counts weight averages as float64, which counts exactly up to 2**53."""
WEIGHT_CAP_RATIO = 3.0
"""The default ``weight_cap_ratio``: no update weighs more than 3 median clients. With k
honest clients of the median size m at a combiner, one hostile claim's share of the
combiner's weight is at most 3m / (k m + 3m) = 3 / (k + 3) (a quarter with 9 honest
clients), while an honest site with up to three times the median's data keeps its full
weight: real partitions are skewed, and a ratio of 2 would clamp more honest sites."""
PARTIAL_CHECK_RATIO = 4.0
"""The ``partial_check_ratio`` we suggest with three or more combiners whose clients' data
are alike (`stratafl.aggregate.partial_check`). The check is off by default: with non-IID
data across combiners an honest partial can sit far from the others, refusing it drops
all its clients, and how often that happens is not measured yet."""


SHA256_PATTERN = r"^[0-9a-f]{64}$"
"""An app package's digest as every part of stratafl writes it: 64 lowercase hex digits."""
APP_FILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.(whl|tar\.gz|zip)$"
"""An app package's file name: a wheel or a source archive, no folder, no hidden file."""
ENTRY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]{0,199}:[A-Za-z_][A-Za-z0-9_]{0,99}$"
"""An app's entry point inside its package: ``module:attr``."""


@dataclass(frozen=True)
class AppRef:
    """The app package a session runs (`docs/apps.md`): its SHA-256 and the ``module:attr``
    of its `ClientApp` (or factory) inside it. Empty: each client runs its own ``--app``."""

    sha256: str = ""
    entry: str = ""

    def __post_init__(self) -> None:
        if not self.sha256 and not self.entry:
            return
        if not re.fullmatch(SHA256_PATTERN, self.sha256):
            raise ConfigError(
                f"app_sha256 {self.sha256!r} is not a SHA-256: give the 64 lowercase hex digits "
                "strata app publish printed"
            )
        if not re.fullmatch(ENTRY_PATTERN, self.entry):
            raise ConfigError(
                f"app_entry {self.entry!r} must name the app inside the package as module:attr"
            )

    def __bool__(self) -> bool:
        return bool(self.sha256)


@dataclass(frozen=True)
class BestModel:
    """A finished round's model scored by its session's ``best_model_by``: whether it beats
    the session's best so far (strictly, so the first model to reach a score keeps it)."""

    score: float
    lowest: bool = False

    def beats(self, best: float | None) -> bool:
        if best is None:
            return True
        return self.score < best if self.lowest else self.score > best


AppSetting: TypeAlias = StrictBool | StrictInt | StrictFloat | StrictStr
"""One value an app is given: a string, an integer, a float or a boolean, kept as typed
(never coerced: ``1`` stays an int, ``"1"`` a string, ``true`` a bool)."""
AppSettingValue: TypeAlias = bool | int | float | str
MAX_APP_SETTINGS = 64
MAX_APP_SETTING_KEY_CHARS = 64
MAX_APP_SETTING_CHARS = 1024
_APP_SETTING_KEY = re.compile(rf"[A-Za-z_][A-Za-z0-9_.-]{{0,{MAX_APP_SETTING_KEY_CHARS - 1}}}")
RUNTIME_CONFIG_KEYS = frozenset(
    {"round", "epochs", "batch_size", "lr", "proximal_mu", "seed"}
    | {"drift_correction", "participation", "feddyn_alpha"}
)
"""What the runtime puts in a task's config itself: no app setting may take these names."""


def check_app_settings(values: Mapping[str, AppSettingValue], where: str) -> None:
    """Refuse app settings that could not travel with every task: too many, a key that is
    not a plain name, a string too long, a float that is not finite. ``where`` names them
    in the message (``app_settings``, ``[settings]``)."""
    if len(values) > MAX_APP_SETTINGS:
        raise ConfigError(
            f"{where} holds {len(values)} settings; at most {MAX_APP_SETTINGS}: pass the rest "
            "in a file the app reads (its path as one setting)"
        )
    for key, value in values.items():
        if not _APP_SETTING_KEY.fullmatch(key):
            raise ConfigError(
                f"{where}: key {key[:80]!r} must be a letter or _ then up to "
                f"{MAX_APP_SETTING_KEY_CHARS - 1} letters, digits, _, . or -"
            )
        if isinstance(value, str) and len(value) > MAX_APP_SETTING_CHARS:
            raise ConfigError(
                f"{where}: {key} is {len(value)} characters; at most {MAX_APP_SETTING_CHARS} "
                "(pass a path to a file for more)"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: {key} = {value} must be a finite number")


@dataclass(frozen=True)
class RoundSettings:
    """The session's settings that every training round carries unchanged, typed.

    The controller builds them from a `SessionConfig` (`SessionConfig.round_settings`), the
    wire carries them as one group (``RoundSpec.settings``, each value in its canonical
    text), and a combiner parses that group once per round (`RoundSettings.parse`) and hands
    the typed values to whatever needs them, so no part of a round parses a setting again.
    A value is always consistent: partial updates come only with a rule that can take them.
    """

    aggregator: Aggregator = field(default_factory=Aggregator)
    compression: Compression = NONE
    partial_updates: PartialUpdates = field(default_factory=PartialUpdates)
    max_examples_per_client: int = 0
    """The largest ``num_examples`` an update may claim (0: no session cap)."""
    weight_cap: int = 0
    """The largest weight an update counts with this round (0: none); larger claims are
    clamped (`stratafl.aggregate.weights`). Set per round by the controller."""
    median_cap_ratio: float = 0.0
    """With no ``weight_cap``: cap weights at this ratio times the lower median of the
    round's claims at each combiner (0: no cap)."""
    app: AppRef = AppRef()
    """The session's app package, which every task names (training and validation)."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_examples_per_client <= MAX_EXAMPLES:
            raise ConfigError(
                f"max_examples_per_client {self.max_examples_per_client} is out of range; "
                f"use 0 (no cap) or a count up to {MAX_EXAMPLES}"
            )
        if not 0 <= self.weight_cap <= MAX_EXAMPLES:
            raise ConfigError(f"weight_cap {self.weight_cap} is out of range 0..{MAX_EXAMPLES}")
        if not (math.isfinite(self.median_cap_ratio) and 0 <= self.median_cap_ratio <= 1e6):
            raise ConfigError(
                f"median_cap_ratio {self.median_cap_ratio} must be a finite number in [0, 1e6]"
            )
        if self.partial_updates.random:
            require_partial_updates(self.aggregator.rule)

    @classmethod
    def parse(
        cls,
        *,
        aggregator: str = "",
        compression: str = "",
        partial_updates: str = "",
        max_examples_per_client: int = 0,
        weight_cap: int = 0,
        median_cap_ratio: float = 0.0,
        app_sha256: str = "",
        app_entry: str = "",
    ) -> RoundSettings:
        """The settings from their text forms (``""`` is each one's default, as on the
        wire); a `ConfigError` naming the bad value and the fix."""
        return cls(
            aggregator=parse_aggregator(aggregator or "fedavg"),
            compression=parse_compression(compression),
            partial_updates=parse_partial_updates(partial_updates),
            max_examples_per_client=max_examples_per_client,
            weight_cap=weight_cap,
            median_cap_ratio=median_cap_ratio,
            app=AppRef(app_sha256, app_entry),
        )


class SessionConfig(BaseModel):
    """One training session: R rounds of FedAvg-style training over the connected clients.

    ``clients_per_round`` is a fraction of the connected clients when it is at most 1.0
    (McMahan's C) and a count when it is larger. Whoever starts a session may be careless
    or hostile, so every setting has an upper bound and no float may be NaN or infinite:
    a config the controller accepts is one it can run.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rounds: int = Field(3, ge=1, le=MAX_COUNT)
    clients_per_round: float = Field(1.0, gt=0, le=MAX_COUNT)
    min_clients: int = Field(1, ge=1, le=MAX_COUNT)
    round_timeout: float = Field(
        60.0, gt=0, le=86_400, description="seconds a combiner waits for updates"
    )
    local_epochs: int = Field(1, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=1_000_000)
    learning_rate: float = Field(0.05, gt=0, le=1000)
    proximal_mu: float = Field(0.0, ge=0, le=1e6)
    validate_each_round: bool = True
    aggregator: str = Field(
        "fedavg",
        max_length=256,
        description="RULE[:k=v,...][+OPTIMISER[:k=v,...]], see docs/aggregators.md",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED)
    seed_model_id: str | None = Field(
        None, min_length=1, max_length=128, description="defaults to the newest stored model"
    )
    wait_for_clients_seconds: float = Field(
        60.0, ge=0, le=3600, description="how long a round waits for min_clients to be connected"
    )
    max_failed_rounds: int = Field(
        3,
        ge=0,
        le=1000,
        description="failed rounds a session runs again (each waits for its clients) "
        "before it fails with the last round's reason",
    )
    quorum: float = Field(
        0.8,
        gt=0,
        le=1,
        description="the share of each combiner's selected clients whose answers close a "
        "round early: once that many answered, the rest get a grace of max(10 s, the time "
        "the quorum took), never past round_timeout (1.0: wait for all; docs/configuration.md)",
    )
    max_examples_per_client: int = Field(
        1_000_000_000,
        ge=1,
        le=MAX_EXAMPLES,
        description="the largest num_examples a client may claim for one update (its weight)",
    )
    weight_cap_ratio: float = Field(
        WEIGHT_CAP_RATIO,
        ge=0,
        le=1e6,
        description="each update weighs its claimed num_examples clamped to this many times "
        "the lower median of the example counts (round 1: the combiner's own claims; later "
        "rounds: the counts the controller verified the round before); 0 turns the cap off "
        "for sites you trust, see docs/security.md",
    )
    partial_check_ratio: float = Field(
        0.0,
        ge=0,
        le=1e6,
        description="with 3 or more partials, the reducer refuses a partial farther from "
        "the partials' coordinate-wise median than this many times their median distance; "
        "0 (the default) turns the check off; 4 is a sensible value, see docs/security.md",
    )
    max_model_bytes: int = Field(
        8 * 2**30,
        ge=1,
        le=2**62,  # an int64 on every wire and in every database
        description="the largest model or update this session accepts, in bytes",
    )
    compression: str = Field(
        "none",
        max_length=64,
        description="the codec of the clients' updates: none, float16, int8 or "
        "topk:fraction=F (see docs/configuration.md)",
    )

    partial_updates: str = Field(
        "none",
        max_length=64,
        description="which tensors each update carries: none (all) or random:fraction=F "
        "(a seeded random share of the tensors each round; needs the fedavg rule), see "
        "docs/configuration.md",
    )

    drift_correction: Literal["none", "scaffold", "feddyn"] = Field(
        "none",
        description="scaffold: SCAFFOLD's control variates correct every local step "
        "(Karimireddy et al. 2020); feddyn: FedDyn's dynamic regulariser (Acar et al. 2021, "
        "strength feddyn_alpha); both need the fedavg rule, see docs/aggregators.md",
    )

    feddyn_alpha: float = Field(
        0.01,
        gt=0,
        le=10,
        description="FedDyn's alpha: the weight of each client's proximal and linear terms "
        "(the paper's values are 0.001-0.1); used only with drift_correction 'feddyn'",
    )

    app_sha256: str = Field(
        "",
        pattern=r"^([0-9a-f]{64})?$",
        description="the app package every client runs in this session, by its SHA-256 "
        "(strata app publish prints it; empty: each client runs its own --app); a client "
        "runs it only if its site allows the digest (docs/apps.md)",
    )
    app_entry: str = Field(
        "",
        max_length=301,
        description="the package's ClientApp (or factory) as module:attr; needed with app_sha256",
    )
    best_model_by: str = Field(
        "accuracy",
        max_length=64,
        pattern=r"^(min:|max:)?[A-Za-z0-9_.-]{1,60}$",
        description="the validation metric that names the session's best model, which the "
        "retention policy keeps: METRIC or max:METRIC (the highest wins) or min:METRIC (the "
        "lowest wins, e.g. min:loss); the clients' examples-weighted mean of each round",
    )

    app_settings: dict[str, AppSetting] = Field(
        default_factory=dict,
        description="the app's own settings, sent with every task in the config its train "
        f"and validate get: at most {MAX_APP_SETTINGS} keys, each a string (at most "
        f"{MAX_APP_SETTING_CHARS} characters), an integer, a float or a boolean, kept as "
        "typed; no key may take a name the runtime sends (round, epochs, lr, ...)",
    )

    @field_validator("app_settings")
    @classmethod
    def _app_settings_fit(cls, value: dict[str, AppSettingValue]) -> dict[str, AppSettingValue]:
        """Bounded, and never shadowing what the runtime sends."""
        try:
            check_app_settings(value, "app_settings")
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        taken = sorted(RUNTIME_CONFIG_KEYS & set(value))
        if taken:
            raise ValueError(
                f"app_settings {', '.join(taken)}: the runtime sends these itself; rename "
                "them (or use the session setting of that name, e.g. local_epochs)"
            )
        return value

    @field_validator("compression")
    @classmethod
    def _compression_is_known(cls, value: str) -> str:
        """Stored in its canonical form, the one the combiners and clients parse."""
        try:
            return str(parse_compression(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("partial_updates")
    @classmethod
    def _partial_updates_is_known(cls, value: str) -> str:
        """Stored in its canonical form, the one the combiners and clients parse."""
        try:
            return str(parse_partial_updates(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    @model_validator(mode="after")
    def _settings_fit(self) -> SessionConfig:
        """Parse the round settings once and refuse what cannot run together: a rule that
        needs more updates than min_clients, partial updates with a rule other than FedAvg
        or with drift correction, drift correction with a rule other than FedAvg."""
        settings = self.round_settings()  # a ConfigError is a ValueError: pydantic reports it
        if self.app_entry and not self.app_sha256:
            raise ValueError(
                f"app_entry {self.app_entry!r} names no package: set app_sha256 as well"
            )
        rule = settings.aggregator.rule
        if settings.partial_updates.random and self.drift_correction != "none":
            # Only FedAvg weighs each tensor by the updates that sent it; SCAFFOLD's control
            # variates and FedDyn's h assume every client's whole update.
            raise ValueError(
                f"partial_updates={self.partial_updates!r} cannot run with drift_correction="
                f"{self.drift_correction!r} (its server state needs every client's whole "
                "update): use partial_updates 'none' or drift_correction 'none'"
            )
        if self.min_clients < rule.min_updates:
            raise ValueError(
                f"aggregator {self.aggregator!r} needs at least {rule.min_updates} updates per "
                f"combiner; raise min_clients (now {self.min_clients}) to {rule.min_updates}"
            )
        if self.drift_correction != "none" and rule.name != "fedavg":
            # SCAFFOLD's update of c and FedDyn's of h are FedAvg's weighted mean.
            raise ValueError(
                f"drift_correction={self.drift_correction!r} needs the fedavg rule (its "
                f"weighted mean is the server's update of the drift state), but aggregator "
                f"{self.aggregator!r} uses {rule.name!r}: use aggregator 'fedavg' (a server "
                "optimiser after '+' is fine) or drift_correction 'none'"
            )
        return self

    @model_validator(mode="after")
    def _count_is_whole(self) -> SessionConfig:
        if self.clients_per_round > 1 and not float(self.clients_per_round).is_integer():
            raise ValueError(
                f"clients_per_round={self.clients_per_round}: "
                "use a fraction <= 1.0 or a whole count"
            )
        return self

    def best_metric(self) -> tuple[str, bool]:
        """The metric ``best_model_by`` names, and whether its lowest value is the best."""
        goal, _, metric = self.best_model_by.rpartition(":")
        return metric, goal == "min"

    def round_settings(self, *, weight_cap: int = 0) -> RoundSettings:
        """What every training round of this session carries, typed (see `RoundSettings`).

        Weights are capped unless ``weight_cap_ratio`` is 0: at ``weight_cap`` when the
        controller has one from verified history (`stratafl.controller.caps`), else at
        the ratio times the lower median of each combiner's claims.
        """
        capped = self.weight_cap_ratio > 0
        return RoundSettings.parse(
            aggregator=self.aggregator,
            compression=self.compression,
            partial_updates=self.partial_updates,
            max_examples_per_client=self.max_examples_per_client,
            weight_cap=weight_cap if capped else 0,
            median_cap_ratio=self.weight_cap_ratio,
            app_sha256=self.app_sha256,
            app_entry=self.app_entry,
        )

    def clients_wanted(self, connected: int) -> int:
        """How many clients to ask for this round, given how many are connected."""
        if self.clients_per_round <= 1.0:
            wanted = math.ceil(self.clients_per_round * connected)
        else:
            wanted = int(self.clients_per_round)
        return max(self.min_clients, min(wanted, connected))

    def quorum_of(self, selected: int) -> int:
        """The answers (any outcome) after which a combiner with ``selected`` clients of
        this round waits only a grace for the rest; 0: wait for every one."""
        return quorum_count(self.quorum, selected)

    def task_config(
        self, round_number: int, *, participation: float = 1.0
    ) -> dict[str, AppSettingValue]:
        """What a client's ``train`` receives as its config: the app's settings, the
        round's. With drift correction it also gets ``drift_correction`` and
        ``participation``, the share of the connected clients asked this round (|S|/N),
        and with FedDyn ``feddyn_alpha``."""
        config: dict[str, AppSettingValue] = {
            **self.app_settings,
            "round": round_number,
            "epochs": self.local_epochs,
            "batch_size": self.batch_size,
            "lr": self.learning_rate,
            "proximal_mu": self.proximal_mu,
            "seed": self.round_seed(round_number),
        }
        if self.drift_correction != "none":
            config.update(drift_correction=self.drift_correction, participation=participation)
        if self.drift_correction == "feddyn":
            config.update(feddyn_alpha=self.feddyn_alpha)
        return config

    def validation_config(self, round_number: int) -> dict[str, AppSettingValue]:
        """What a client's ``validate`` receives as its config: the app's settings and the
        round."""
        return {**self.app_settings, "round": round_number}

    def drift_state_prefix(self) -> str | None:
        """Where the session's drift correction keeps its server state in the global model
        (`stratafl.aggregate.server_state`); None without drift correction."""
        return {"scaffold": SCAFFOLD_PREFIX, "feddyn": FEDDYN_PREFIX}.get(self.drift_correction)

    def round_seed(self, round_number: int) -> int:
        """The one seed of a round: its clients' sampling and their training both draw on it."""
        return self.seed * 1_000_003 + round_number


def quorum_count(fraction: float, selected: int) -> int:
    """ceil(``fraction`` x ``selected``) answers, at least 1; 0 (wait for all) when the
    fraction is 1 or nothing is selected. The tiny slack keeps 0.7 x 10 at 7, not 8."""
    if fraction >= 1.0 or selected <= 0:
        return 0
    return max(1, math.ceil(fraction * selected - 1e-9))
