"""Fashion-MNIST with the same MLP in PyTorch: how to bring a torch model to stratafl.

The runtime speaks numpy `Params`; torch appears only inside this file. Parameters convert
at the edge (numpy -> state_dict before training, state_dict -> numpy after), and the
module names its layers ``fc1``, ``fc2`` so the tensor names match its numpy twin
(`stratafl.apps.fashion_mnist`) exactly: a federation may even mix the two apps. Needs
``pip install 'stratafl[torch]'``.

For a model this small torch is several times slower than numpy (per-step overhead); the
point of this example is the conversion, not speed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from stratafl.apps.mlp import SgdConfig, init_mlp
from stratafl.client.app import ClientApp, ClientContext, Config, TrainResult
from stratafl.data import ClientSplit, client_split, load_fashion_mnist
from stratafl.errors import ConfigError
from stratafl.params import Params

SIZES = (784, 128, 10)
DEFAULTS = SgdConfig(epochs=1, batch_size=32, lr=0.05)
TRAIN_METRICS_SAMPLES = 2000
EVAL_BATCH = 8192


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ConfigError(
            "examples/fashion_mnist_torch.py needs PyTorch: pip install 'stratafl[torch]'"
        ) from exc
    torch.set_num_threads(1)  # many clients share few cores; more threads only contend
    return torch


def _build_mlp(torch: Any, sizes: tuple[int, ...]) -> Any:
    nn = torch.nn

    class MLP(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
                setattr(self, f"fc{i}", nn.Linear(a, b))
            self.depth = len(sizes) - 1

        def forward(self, x: Any) -> Any:
            for i in range(1, self.depth + 1):
                x = getattr(self, f"fc{i}")(x)
                if i < self.depth:
                    x = torch.relu(x)
            return x

    return MLP()


class FashionMnistTorchApp:
    """A `ClientApp` training a torch MLP; torch, data and model load on first use."""

    def __init__(self, context: ClientContext) -> None:
        self.context = context
        self._torch: Any = None
        self._model: Any = None
        self._split: ClientSplit | None = None
        self._tensors: tuple[Any, Any, Any, Any] | None = None

    def _ready(self) -> tuple[Any, Any, tuple[Any, Any, Any, Any]]:
        if self._tensors is None:
            torch = _import_torch()
            self._split = client_split(load_fashion_mnist(), self.context)
            s = self._split
            self._tensors = (
                torch.from_numpy(s.x_train),
                torch.from_numpy(s.y_train),
                torch.from_numpy(s.x_test),
                torch.from_numpy(s.y_test),
            )
            self._torch = torch
            self._model = _build_mlp(torch, SIZES)
        return self._torch, self._model, self._tensors

    def initial_params(self, seed: int) -> Params:
        # The numpy initialiser: the same seed gives the same model in both apps.
        return init_mlp(list(SIZES), seed)

    def train(self, params: Params, config: Config) -> TrainResult:
        cfg = SgdConfig.from_config(config, DEFAULTS)
        torch, model, (x, y, _, _) = self._ready()
        _load(torch, model, params)
        anchor = [p.detach().clone() for p in model.parameters()] if cfg.proximal_mu else []
        optimiser = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        rng = np.random.default_rng(cfg.shuffle_seed(self.context.partition_id))
        model.train()
        for _ in range(cfg.epochs):
            order = torch.from_numpy(rng.permutation(len(y)))
            for batch in torch.split(order, cfg.batch_size):
                loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
                if anchor:
                    prox = sum(
                        ((p - a) ** 2).sum()
                        for p, a in zip(model.parameters(), anchor, strict=True)
                    )
                    loss = loss + 0.5 * cfg.proximal_mu * prox
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        n = len(y)
        sample = np.arange(n)
        if n > TRAIN_METRICS_SAMPLES:
            sample = np.sort(
                np.random.default_rng(cfg.seed).choice(n, TRAIN_METRICS_SAMPLES, False)
            )
        idx = torch.from_numpy(sample)
        metrics = _evaluate(torch, model, x[idx], y[idx])
        return TrainResult(
            params=_dump(model),
            num_examples=n,
            metrics={"train_loss": metrics["loss"], "train_accuracy": metrics["accuracy"]},
        )

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        torch, model, (_, _, x, y) = self._ready()
        _load(torch, model, params)
        return {**_evaluate(torch, model, x, y), "num_examples": float(len(y))}


def _load(torch: Any, model: Any, params: Params) -> None:
    """numpy -> torch: copies, so training never writes into the caller's arrays."""
    state = {
        name: torch.from_numpy(np.array(arr, dtype=np.float32)) for name, arr in params.items()
    }
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"params do not fit the {'-'.join(map(str, SIZES))} MLP: {exc}; train from "
            "initial_params of this app"
        ) from exc


def _dump(model: Any) -> Params:
    """torch -> numpy, in the module's (= the numpy twin's) tensor order."""
    return {name: t.detach().cpu().numpy().copy() for name, t in model.state_dict().items()}


def _evaluate(torch: Any, model: Any, x: Any, y: Any) -> dict[str, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), EVAL_BATCH):
            logits = model(x[start : start + EVAL_BATCH])
            yb = y[start : start + EVAL_BATCH]
            loss_sum += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=1) == yb).sum())
    return {"accuracy": correct / len(y), "loss": loss_sum / len(y)}


def make_app(context: ClientContext) -> ClientApp:
    """The factory `strata` calls in each client process; fails early if torch is missing."""
    _import_torch()
    return FashionMnistTorchApp(context)
