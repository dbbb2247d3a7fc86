"""Fashion-MNIST with a numpy MLP: the app of `strata demo` and the default of `strata run`.

Run a federation with it (``--app`` may be left out: this is the default)::

    strata run --app stratafl.apps.fashion_mnist:make_app

To write your own app, copy this file and pass ``--app path/to/your_file.py:make_app``.

Each client process loads Fashion-MNIST once (cached as .npz after the first parse), keeps
its partition of the train set and an IID share of the test set for validation.

``make_small_app`` is the same app on a fixed random subset (6,000 train, 2,000 test
examples): for smoke runs and the quick size of `strata experiment`. Its SGD takes
SCAFFOLD's correction (`train_corrected`, so ``drift_correction="scaffold"`` sessions run
it; see `stratafl.client.scaffold`). The app also offers
what experiments need beyond `ClientApp`: its training data to data-poisoning attacks
(`with_training_transform`, see `stratafl.attacks`) and scoring on any labelled data
(`evaluate_on`, `test_data`, `train_labels`).

``make_2nn_app`` (and ``make_small_2nn_app``) is the same app with McMahan et al. 2017's
"2NN", two hidden layers of 200 units (199,210 parameters against the default's 101,770):
the larger model of the communication study. Any hidden layout is the ``hidden`` option
of `FashionMnistNumpyApp`. To give every client a shared subset of the training data as
well as its partition (Zhao et al. 2018), end the partition spec in ``+shared:F``, e.g.
``--partition shards:2+shared:0.05`` (see `stratafl.data.partition`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from stratafl.aggregate.server_state import model_part
from stratafl.apps.mlp import SgdConfig, evaluate, init_mlp, sgd_steps, train_sgd
from stratafl.attacks import DataTransform
from stratafl.client.app import ClientApp, ClientContext, Config, TrainResult
from stratafl.client.scaffold import CorrectedTraining
from stratafl.data import ClientSplit, client_split, load_fashion_mnist
from stratafl.errors import ConfigError
from stratafl.params import Params

HIDDEN = 128
"""Hidden units: 784-128-10 trains an epoch on 60k examples in under a second."""
TWO_NN = (200, 200)
"""McMahan et al. 2017's "2NN": 784-200-200-10."""
MAX_HIDDEN_LAYERS = 8
MAX_HIDDEN_UNITS = 4096
DEFAULTS = SgdConfig(epochs=1, batch_size=32, lr=0.05)
"""What train() uses for keys the round config leaves out."""
TRAIN_METRICS_SAMPLES = 2000
"""Train metrics are computed on at most this many examples: they are a progress signal,
not a result, and evaluating the whole partition would cost a good part of an epoch."""
SMALL_SUBSET = (6000, 2000)
"""Train and test examples of `make_small_app` (a fixed random subset, seed 0)."""


class FashionMnistNumpyApp:
    """A `ClientApp` over one client's share of Fashion-MNIST; data is loaded on first use,
    so building the app is instant and apps that only call initial_params never load it."""

    def __init__(
        self,
        context: ClientContext,
        *,
        subset: tuple[int, int] | None = None,
        train_transform: DataTransform | None = None,
        hidden: Sequence[int] = (HIDDEN,),
    ) -> None:
        """``hidden``: the units of each hidden layer, 1 to `MAX_HIDDEN_LAYERS` layers of 1 to
        `MAX_HIDDEN_UNITS` units (the default 784-128-10; `TWO_NN` is McMahan's 2NN)."""
        self.hidden = tuple(int(h) for h in hidden)
        if not 1 <= len(self.hidden) <= MAX_HIDDEN_LAYERS or not all(
            1 <= h <= MAX_HIDDEN_UNITS for h in self.hidden
        ):
            raise ConfigError(
                f"hidden={list(hidden)}: give 1 to {MAX_HIDDEN_LAYERS} hidden layers of 1 to "
                f"{MAX_HIDDEN_UNITS} units each, e.g. (200, 200)"
            )
        self.context = context
        self.subset = subset
        self.train_transform = train_transform
        self._split: ClientSplit | None = None

    @property
    def split(self) -> ClientSplit:
        if self._split is None:
            dataset = load_fashion_mnist()
            if self.subset is not None:
                dataset = dataset.subset(*self.subset)
            self._split = _transformed(client_split(dataset, self.context), self.train_transform)
        return self._split

    def with_training_transform(self, transform: DataTransform) -> FashionMnistNumpyApp:
        """This app with ``transform`` applied to its training set once, after any
        transform it already had (`stratafl.attacks.PoisonableApp`)."""
        before = self.train_transform

        def both(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return transform(*before(x, y)) if before is not None else transform(x, y)

        return FashionMnistNumpyApp(
            self.context, subset=self.subset, train_transform=both, hidden=self.hidden
        )

    def evaluate_on(self, params: Params, x: np.ndarray, y: np.ndarray) -> Mapping[str, float]:
        """Accuracy and loss of ``params`` on any labelled data (e.g. one class, or images
        stamped with a backdoor trigger); a model carrying SCAFFOLD's control variates is
        scored without them."""
        return evaluate(model_part(params), x, y)

    def test_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The test examples this app validates on (all of them for a pooled context)."""
        return self.split.x_test, self.split.y_test

    def train_labels(self) -> np.ndarray:
        """The labels of this app's training examples, after any training transform."""
        return self.split.y_train

    def initial_params(self, seed: int) -> Params:
        return init_mlp([784, *self.hidden, 10], seed)

    def train(self, params: Params, config: Config) -> TrainResult:
        return self.train_corrected(params, config, None).result

    def train_corrected(
        self, params: Params, config: Config, correction: Params | None
    ) -> CorrectedTraining:
        """``train`` with ``correction`` added to every SGD step's gradient (SCAFFOLD's
        ``c - c_i``, see `stratafl.client.scaffold`; None adds nothing)."""
        cfg = SgdConfig.from_config(config, DEFAULTS)
        data = self.split
        new = train_sgd(
            params,
            data.x_train,
            data.y_train,
            cfg,
            shuffle_seed=cfg.shuffle_seed(self.context.partition_id),
            correction=correction,
        )
        sample = _metrics_sample(len(data.y_train), cfg.seed)
        metrics = evaluate(new, data.x_train[sample], data.y_train[sample])
        result = TrainResult(
            params=new,
            num_examples=len(data.y_train),
            metrics={"train_loss": metrics["loss"], "train_accuracy": metrics["accuracy"]},
        )
        steps = sgd_steps(len(data.y_train), epochs=cfg.epochs, batch_size=cfg.batch_size)
        return CorrectedTraining(result, steps=steps, lr=cfg.lr)

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        data = self.split
        metrics = evaluate(params, data.x_test, data.y_test)
        return {**metrics, "num_examples": float(len(data.y_test))}


def _metrics_sample(n: int, seed: int) -> np.ndarray:
    if n <= TRAIN_METRICS_SAMPLES:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, TRAIN_METRICS_SAMPLES, replace=False))


def _transformed(split: ClientSplit, transform: DataTransform | None) -> ClientSplit:
    if transform is None:
        return split
    x_train, y_train = transform(split.x_train, split.y_train)
    return ClientSplit(x_train, y_train, split.x_test, split.y_test)


def make_app(context: ClientContext) -> ClientApp:
    """The factory `strata` calls in each client process."""
    return FashionMnistNumpyApp(context)


def make_small_app(context: ClientContext) -> ClientApp:
    """The same app on `SMALL_SUBSET` of Fashion-MNIST: seconds instead of minutes."""
    return FashionMnistNumpyApp(context, subset=SMALL_SUBSET)


def make_2nn_app(context: ClientContext) -> ClientApp:
    """The app with McMahan et al.'s 2NN (784-200-200-10) instead of 784-128-10."""
    return FashionMnistNumpyApp(context, hidden=TWO_NN)


def make_small_2nn_app(context: ClientContext) -> ClientApp:
    """The 2NN on `SMALL_SUBSET`."""
    return FashionMnistNumpyApp(context, subset=SMALL_SUBSET, hidden=TWO_NN)
