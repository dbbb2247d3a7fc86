"""The smallest complete stratafl app: softmax regression on scikit-learn's digits.

Ship it as a package (docs/apps.md), or run it by path:
--app examples/minimal_app/minimal_app.py:make_app
"""

import numpy as np
from sklearn.datasets import load_digits

from stratafl import ClientContext, TrainResult


class DigitsApp:
    def __init__(self, context: ClientContext) -> None:
        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        order = np.random.default_rng(context.seed).permutation(len(y))
        mine = order[context.partition_id :: context.num_partitions]  # this client's share
        cut = int(0.8 * len(mine))
        self.train_x, self.train_y = x[mine[:cut]], y[mine[:cut]]
        self.test_x, self.test_y = x[mine[cut:]], y[mine[cut:]]

    def initial_params(self, seed):
        return {"w": np.zeros((64, 10), np.float32), "b": np.zeros(10, np.float32)}

    def _probabilities(self, params, x):
        logits = x @ params["w"] + params["b"]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def train(self, params, config):
        w, b = params["w"].copy(), params["b"].copy()
        for _ in range(int(config.get("epochs", 1)) * 20):  # full-batch gradient steps
            error = self._probabilities({"w": w, "b": b}, self.train_x)
            error[np.arange(len(self.train_y)), self.train_y] -= 1
            w -= float(config.get("lr", 0.05)) * 10 * self.train_x.T @ error / len(error)
            b -= float(config.get("lr", 0.05)) * 10 * error.mean(axis=0)
        return TrainResult({"w": w, "b": b}, len(self.train_y), {})

    def validate(self, params, config):
        p = self._probabilities(params, self.test_x)
        loss = -np.log(p[np.arange(len(self.test_y)), self.test_y] + 1e-9).mean()
        accuracy = (p.argmax(axis=1) == self.test_y).mean()
        return {"accuracy": float(accuracy), "loss": float(loss), "num_examples": len(self.test_y)}


def make_app(context: ClientContext) -> DigitsApp:
    return DigitsApp(context)
