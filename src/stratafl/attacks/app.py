"""Run an attack inside any client app: `attacked(app, "label_flip")` is the app, poisoned.

An attacked app is still an app: the client runtime serves it like any other, so the same
attack runs in a simulation, in `strata run` and on a real client. The protocols here are
structural copies of `stratafl.client.app.ClientApp`, so this package needs nothing of the
runtime (the client process imports it to wrap its app, as `ClientOptions.attack` asks).

- Model poisoning wraps ``train``: the app trains honestly on what it was sent, then the
  attack rewrites the result relative to the global parameters it received.
- A combined attack (``backdoor:...+scale:...``) poisons the data, then the update.
- Data poisoning needs the app's training data, which only the app can reach: an app that
  offers `PoisonableApp.with_training_transform` can be poisoned; any other app is refused
  with a `ConfigError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from stratafl.attacks.data import Backdoor, LabelFlip
from stratafl.attacks.model import UpdateAttack
from stratafl.attacks.spec import Attack, Combined, attack_spec, parse_attack
from stratafl.errors import ConfigError
from stratafl.params import Params

DataTransform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``(x_train, y_train) -> (x_train, y_train)``, applied once to a client's training set."""


class TrainOutput(Protocol):
    """What ``train`` returns: a dataclass with the new ``params`` (e.g. `TrainResult`)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def params(self) -> Params: ...


R_co = TypeVar("R_co", bound=TrainOutput, covariant=True)
R = TypeVar("R", bound=TrainOutput)


@runtime_checkable
class App(Protocol[R_co]):
    """`stratafl.client.app.ClientApp`, generic in what ``train`` returns."""

    def initial_params(self, seed: int) -> Params: ...

    def train(self, params: Params, config: Mapping[str, Any]) -> R_co: ...

    def validate(self, params: Params, config: Mapping[str, Any]) -> Mapping[str, float]: ...


@runtime_checkable
class PoisonableApp(App[R_co], Protocol[R_co]):
    """An app whose training data a data-poisoning attack may rewrite."""

    def with_training_transform(self, transform: DataTransform) -> App[R_co]:
        """A copy of this app that applies ``transform`` to its training set once, when it
        loads it; the test data it validates on stays clean."""
        ...


@dataclass(frozen=True)
class UpdatePoisoningApp(Generic[R]):
    """``app`` with every trained model rewritten by a model-poisoning ``attack``.

    ``client`` keeps the random attacks of two clients apart: the noise of a round is drawn
    from (the round's seed, ``client``).
    """

    app: App[R]
    attack: UpdateAttack
    client: int = 0

    def initial_params(self, seed: int) -> Params:
        return self.app.initial_params(seed)

    def train(self, params: Params, config: Mapping[str, Any]) -> R:
        result = self.app.train(params, config)
        seed = np.random.SeedSequence([max(0, int(config.get("seed", 0))), self.client])
        poisoned = self.attack.poison(params, result.params, int(seed.generate_state(1)[0]))
        return dataclasses.replace(result, params=poisoned)

    def validate(self, params: Params, config: Mapping[str, Any]) -> Mapping[str, float]:
        return self.app.validate(params, config)


def attacked(app: App[R], attack: Attack | str, *, client: int = 0) -> App[R]:
    """``app`` running ``attack`` (an `Attack` or its spec, e.g. ``"sign_flip"``)."""
    if isinstance(attack, str):
        attack = parse_attack(attack)
    if isinstance(attack, Combined):
        return attacked(attacked(app, attack.data, client=client), attack.update, client=client)
    if isinstance(attack, LabelFlip | Backdoor):
        if not isinstance(app, PoisonableApp):
            raise ConfigError(
                f"{attack_spec(attack)} rewrites training data, but {type(app).__name__} does "
                "not offer with_training_transform(transform); add it (see "
                "stratafl.apps.fashion_mnist) or choose a model-poisoning attack"
            )
        return app.with_training_transform(attack.transform)
    return UpdatePoisoningApp(app, attack, client)
