"""FedProx helpers: the proximal term and its gradient."""

from __future__ import annotations

import numpy as np
import pytest

from stratafl.aggregate import proximal_gradient, proximal_term
from stratafl.errors import ConfigError, ModelFormatError

W = {"a": np.array([1.0, 2.0], dtype=np.float32), "b": np.array([[3.0]], dtype=np.float32)}
G = {"a": np.array([0.0, 0.0], dtype=np.float32), "b": np.array([[1.0]], dtype=np.float32)}


def test_proximal_term_by_hand() -> None:
    assert proximal_term(W, G, mu=0.1) == pytest.approx(0.05 * (1 + 4 + 4))
    assert proximal_term(W, W, mu=0.1) == 0.0


def test_proximal_gradient_by_hand() -> None:
    grad = proximal_gradient(W, G, mu=0.1)
    np.testing.assert_allclose(grad["a"], [0.1, 0.2])
    np.testing.assert_allclose(grad["b"], [[0.2]])
    assert grad["a"].dtype == np.float32


def test_gradient_is_the_derivative_of_the_term() -> None:
    eps = 1e-3
    w = {"a": np.array([0.3, -0.7]), "b": np.array([[1.5]])}
    g = {"a": np.array([0.1, 0.2]), "b": np.array([[-1.0]])}
    shifted = {"a": w["a"] + np.array([eps, 0.0]), "b": w["b"]}
    slope = (proximal_term(shifted, g, 0.5) - proximal_term(w, g, 0.5)) / eps
    assert slope == pytest.approx(proximal_gradient(w, g, 0.5)["a"][0], rel=1e-2)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ConfigError, match="mu=-1"):
        proximal_term(W, G, mu=-1)
    with pytest.raises(ModelFormatError, match="missing"):
        proximal_gradient({"a": W["a"]}, G, mu=0.1)
