"""A multilayer perceptron in plain numpy: ReLU hidden layers, softmax cross-entropy.

Why numpy and not a framework: for models this small, per-step overhead dominates, and a
numpy step is several times cheaper than a torch step on two threads (see the design
notes). It also keeps simulations free of heavy dependencies.

The model *is* its `Params`: ``fc1.weight`` (out, in), ``fc1.bias`` (out,), ``fc2...``,
the layout of ``torch.nn.Linear``, so a torch twin converts with no reshaping. All
functions take parameters and return new ones; inputs are never modified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stratafl.errors import ConfigError
from stratafl.params import Params, check_same_layout, specs_of

EVAL_BATCH = 8192
"""Rows per forward pass in `evaluate`: bounds memory on large test sets."""


def init_mlp(sizes: Sequence[int], seed: int) -> Params:
    """He-initialised weights (suited to ReLU) and zero biases, float32.

    ``sizes = [784, 128, 10]`` gives ``fc1`` 784->128 and ``fc2`` 128->10.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ConfigError(f"MLP sizes need an input and an output size, all >= 1; got {sizes}")
    rng = np.random.default_rng(seed)
    params: Params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        std = np.sqrt(2.0 / fan_in)
        params[f"fc{i}.weight"] = (rng.standard_normal((fan_out, fan_in)) * std).astype(np.float32)
        params[f"fc{i}.bias"] = np.zeros(fan_out, dtype=np.float32)
    return params


def train_sgd(
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    sgd: SgdConfig,
    *,
    shuffle_seed: int,
    global_params: Mapping[str, np.ndarray] | None = None,
    correction: Mapping[str, np.ndarray] | None = None,
) -> Params:
    """Minibatch SGD on mean softmax cross-entropy, as ``sgd`` says (epochs, batch size,
    learning rate, FedProx's mu); a new shuffle every epoch, drawn from ``shuffle_seed``
    (an app passes ``sgd.shuffle_seed(client)``, so no two clients share an order).

    With ``sgd.proximal_mu > 0`` the loss gains FedProx's ``mu/2 * ||w - w_global||^2`` (Li et
    al. 2020), i.e. the gradient gains ``mu * (w - w_global)``, which keeps a client with
    skewed data from drifting far from the model it was sent. ``global_params`` defaults to
    ``params`` (the model the client received), which is what FedProx means.

    ``correction`` (laid out as ``params``) is added to every step's gradient: SCAFFOLD's
    ``c - c_i`` (`stratafl.aggregate.scaffold`); `sgd_steps` counts the steps taken.
    """
    layers = _layer_names(params)
    _check_data(params, layers, x, y)
    if correction is not None:
        check_same_layout(specs_of(params), specs_of(correction))
    epochs, batch_size, lr, proximal_mu = sgd.epochs, sgd.batch_size, sgd.lr, sgd.proximal_mu
    if epochs < 0 or batch_size < 1 or not lr > 0:
        raise ConfigError(
            f"need epochs >= 0, batch_size >= 1 and lr > 0; got epochs={epochs}, "
            f"batch_size={batch_size}, lr={lr}"
        )
    if proximal_mu < 0:
        raise ConfigError(f"proximal_mu must be >= 0 (0 = plain FedAvg), got {proximal_mu}")
    anchor_source = params
    if global_params is not None:
        check_same_layout(specs_of(params), specs_of(global_params))
        anchor_source = global_params
    # Copies, so the caller's arrays are never touched; the anchor only exists under FedProx.
    weights = [np.array(params[w], dtype=np.float32) for w, _ in layers]
    biases = [np.array(params[b], dtype=np.float32) for _, b in layers]
    anchor32 = [
        (np.array(anchor_source[w], dtype=np.float32), np.array(anchor_source[b], dtype=np.float32))
        for w, b in layers
        if proximal_mu > 0
    ]
    shift32 = [
        (np.array(correction[w], dtype=np.float32), np.array(correction[b], dtype=np.float32))
        for w, b in layers
        if correction is not None
    ]
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(shuffle_seed)
    step = np.float32(lr)
    mu = np.float32(proximal_mu)
    n = len(y)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            grads_w, grads_b = _gradients(weights, biases, x[batch], y[batch])
            for i, (gw, gb) in enumerate(zip(grads_w, grads_b, strict=True)):
                if mu > 0:
                    gw += mu * (weights[i] - anchor32[i][0])
                    gb += mu * (biases[i] - anchor32[i][1])
                if shift32:
                    gw += shift32[i][0]
                    gb += shift32[i][1]
                gw *= step  # in place: the gradients are fresh arrays, and this saves a copy
                gb *= step
                weights[i] -= gw
                biases[i] -= gb
    out: Params = {}
    for (w_name, b_name), w, b in zip(layers, weights, biases, strict=True):
        out[w_name] = w.astype(np.asarray(params[w_name]).dtype, copy=False)
        out[b_name] = b.astype(np.asarray(params[b_name]).dtype, copy=False)
    return out


def sgd_steps(examples: int, *, epochs: int, batch_size: int) -> int:
    """The minibatch steps `train_sgd` takes: ``epochs * ceil(examples / batch_size)``."""
    return epochs * -(-examples // batch_size)


def evaluate(params: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``params`` on ``(x, y)``."""
    layers = _layer_names(params)
    _check_data(params, layers, x, y)
    if len(y) == 0:
        raise ConfigError("cannot evaluate on 0 examples; give evaluate a non-empty set")
    weights = [np.asarray(params[w], dtype=np.float32) for w, _ in layers]
    biases = [np.asarray(params[b], dtype=np.float32) for _, b in layers]
    y = np.asarray(y, dtype=np.int64)
    correct = 0
    loss_sum = 0.0
    for start in range(0, len(y), EVAL_BATCH):
        xb = np.asarray(x[start : start + EVAL_BATCH], dtype=np.float32)
        yb = y[start : start + EVAL_BATCH]
        logits = _forward(weights, biases, xb)[-1]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1))
        loss_sum += float((log_norm - shifted[np.arange(len(yb)), yb]).astype(np.float64).sum())
        correct += int((logits.argmax(axis=1) == yb).sum())
    return {"accuracy": correct / len(y), "loss": loss_sum / len(y)}


@dataclass(frozen=True)
class SgdConfig:
    """Local-training settings read from a round's config, with typed defaults.

    Apps share this so every example honours the same keys the runtime sends.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    seed: int = 0
    proximal_mu: float = 0.0
    round: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], defaults: SgdConfig | None = None) -> SgdConfig:
        """Read the known keys of ``config``; missing keys take ``defaults``' values."""
        base = defaults or cls()
        try:
            return cls(
                epochs=int(config.get("epochs", base.epochs)),
                batch_size=int(config.get("batch_size", base.batch_size)),
                lr=float(config.get("lr", base.lr)),
                seed=int(config.get("seed", base.seed)),
                proximal_mu=float(config.get("proximal_mu", base.proximal_mu)),
                round=int(config.get("round", base.round)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"round config {dict(config)!r} has a non-numeric value ({exc}); epochs, "
                "batch_size, seed and round must be ints, lr and proximal_mu numbers"
            ) from exc

    def shuffle_seed(self, client: int) -> int:
        """A shuffle seed distinct per (seed, round, client), so no client replays another's
        order or its own from an earlier round."""
        state = np.random.SeedSequence([self.seed, self.round, client]).generate_state(1)
        return int(state[0])


def _layer_names(params: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    layers = []
    for i in range(1, len(params) // 2 + 1):
        names = (f"fc{i}.weight", f"fc{i}.bias")
        if not all(name in params for name in names):
            break
        layers.append(names)
    if not layers or 2 * len(layers) != len(params):
        raise ConfigError(
            f"params {list(params)} are not an MLP; expected fc1.weight, fc1.bias, fc2.weight, "
            "... as made by init_mlp"
        )
    for (w, _), (w_next, _) in zip(layers, layers[1:], strict=False):
        if np.shape(params[w])[0] != np.shape(params[w_next])[1]:
            raise ConfigError(
                f"{w} has {np.shape(params[w])[0]} outputs but {w_next} expects "
                f"{np.shape(params[w_next])[1]} inputs"
            )
    return layers


def _check_data(
    params: Mapping[str, np.ndarray], layers: list[tuple[str, str]], x: np.ndarray, y: np.ndarray
) -> None:
    inputs = np.shape(params[layers[0][0]])[1]
    if np.ndim(x) != 2 or np.shape(x)[1] != inputs:
        raise ConfigError(f"x must be (N, {inputs}) to match {layers[0][0]}, got {np.shape(x)}")
    if np.shape(y) != (np.shape(x)[0],):
        raise ConfigError(f"y must be ({np.shape(x)[0]},) to match x, got {np.shape(y)}")
    classes = np.shape(params[layers[-1][0]])[0]
    if len(y) and (np.min(y) < 0 or np.max(y) >= classes):
        raise ConfigError(f"labels must be in [0, {classes}) for this model's output layer")


def _forward(
    weights: list[np.ndarray], biases: list[np.ndarray], x: np.ndarray
) -> list[np.ndarray]:
    """Activations of every layer: [x, h1, ..., logits]."""
    acts = [x]
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        z = acts[-1] @ w.T
        z += b
        if i < len(weights) - 1:
            np.maximum(z, 0, out=z)
        acts.append(z)
    return acts


def _gradients(
    weights: list[np.ndarray], biases: list[np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    acts = _forward(weights, biases, x)
    delta = acts[-1]
    delta -= delta.max(axis=1, keepdims=True)
    np.exp(delta, out=delta)
    delta /= delta.sum(axis=1, keepdims=True)
    delta[np.arange(len(y)), y] -= 1
    delta *= np.float32(1.0 / len(y))
    grads_w: list[np.ndarray] = [np.empty(0)] * len(weights)
    grads_b: list[np.ndarray] = [np.empty(0)] * len(weights)
    for i in range(len(weights) - 1, -1, -1):
        grads_w[i] = delta.T @ acts[i]
        grads_b[i] = delta.sum(axis=0)
        if i > 0:
            delta = delta @ weights[i]
            delta *= acts[i] > 0
    return grads_w, grads_b
