"""Client-side attacks for robustness experiments, usable on any client app.

    attacked(app, "label_flip:source=6,target=0")   the app, poisoned
    parse_attack("scale:factor=10")                 a spec -> a typed attack
    attacked(app, "backdoor+scale:factor=10")       model replacement: both at once

Data poisoning (`LabelFlip`, `Backdoor`) rewrites a client's training set once; model
poisoning (`ScaleUpdate`, `SignFlip`, `GaussianNoise`) rewrites each model the client
trained before it is sent. `attack_success_rate` measures a backdoor on test data. Every
attack names its paper in its docstring. The package depends on numpy alone (and the
parameter and error types), so the client process can import it to wrap its app.
"""

from stratafl.attacks.app import App, DataTransform, PoisonableApp, UpdatePoisoningApp, attacked
from stratafl.attacks.data import Backdoor, DataAttack, LabelFlip
from stratafl.attacks.metrics import Predict, attack_success_rate
from stratafl.attacks.model import GaussianNoise, ScaleUpdate, SignFlip, UpdateAttack
from stratafl.attacks.spec import (
    ATTACKS,
    Attack,
    Combined,
    attack_spec,
    parse_attack,
    parse_attack_plan,
)

__all__ = [
    "ATTACKS",
    "App",
    "Attack",
    "Backdoor",
    "Combined",
    "DataAttack",
    "DataTransform",
    "GaussianNoise",
    "LabelFlip",
    "PoisonableApp",
    "Predict",
    "ScaleUpdate",
    "SignFlip",
    "UpdateAttack",
    "UpdatePoisoningApp",
    "attack_spec",
    "attack_success_rate",
    "attacked",
    "parse_attack",
    "parse_attack_plan",
]
