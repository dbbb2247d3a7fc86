"""The Fashion-MNIST apps (the packaged demo app, the torch example), loaded the way `strata`
loads them, on real data."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from stratafl.client.app import ClientApp, ClientContext, load_app
from stratafl.data import client_split, load_fashion_mnist
from stratafl.data.fashion_mnist import FILES, SYSTEM_DIR
from stratafl.errors import ConfigError
from tests.support.paths import EXAMPLES

NUMPY_APP = "stratafl.apps.fashion_mnist:make_app"
TORCH_APP = f"{EXAMPLES / 'fashion_mnist_torch.py'}:make_app"

pytestmark = pytest.mark.skipif(
    not all((SYSTEM_DIR / name).is_file() for name in FILES.values()),
    reason="needs `apt-get install dataset-fashion-mnist`",
)


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Apps load through the default cache folder; point it at a temporary one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STRATAFL_DATA_DIR", str(tmp_path_factory.mktemp("fm-cache")))
        yield


def _context(pid: int = 3, spec: str = "shards:2") -> ClientContext:
    return ClientContext(client_id=f"c{pid}", partition_id=pid, num_partitions=10, partitioner=spec)


def test_numpy_app_trains_and_validates_on_its_partition() -> None:
    app = load_app(NUMPY_APP, _context())
    assert isinstance(app, ClientApp)
    params = app.initial_params(0)
    assert params["fc1.weight"].shape[1] == 784 and params["fc2.bias"].shape == (10,)
    before = app.validate(params, {})
    result = app.train(params, {"epochs": 1, "round": 1, "seed": 0})
    after = app.validate(result.params, {})
    assert result.num_examples == 6000  # 60k / 10 clients, 2 whole shards each
    assert set(result.metrics) == {"train_loss", "train_accuracy"}
    assert result.metrics["train_accuracy"] > 0.8  # 2 labels: easy on its own data
    assert set(after) == {"accuracy", "loss", "num_examples"} and after["num_examples"] == 1000
    assert after["accuracy"] > before["accuracy"]


def test_numpy_app_honours_the_round_config() -> None:
    app = load_app(NUMPY_APP, _context(spec="iid"))
    params = app.initial_params(1)
    unchanged = app.train(params, {"epochs": 0})
    assert all(np.array_equal(unchanged.params[k], params[k]) for k in params)
    a = app.train(params, {"epochs": 1, "batch_size": 64, "lr": 0.01, "round": 2})
    b = app.train(params, {"epochs": 1, "batch_size": 64, "lr": 0.01, "round": 2})
    c = app.train(params, {"epochs": 1, "batch_size": 64, "lr": 0.01, "round": 3})
    assert all(np.array_equal(a.params[k], b.params[k]) for k in params)
    assert not np.array_equal(a.params["fc1.weight"], c.params["fc1.weight"])
    with pytest.raises(ConfigError, match="non-numeric"):
        app.train(params, {"lr": "fast"})


def test_validation_shares_cover_the_test_set_and_one_partition_is_pooled() -> None:
    data = load_fashion_mnist()
    shares = [client_split(data, _context(pid, "dirichlet:0.5")) for pid in range(10)]
    assert sum(len(s.y_test) for s in shares) == 10_000
    assert sum(len(s.y_train) for s in shares) == 60_000
    pooled = client_split(data, ClientContext(num_partitions=1, partitioner="dirichlet:0.5"))
    assert len(pooled.y_train) == 60_000 and len(pooled.y_test) == 10_000
    with pytest.raises(ConfigError, match="partition_id 10 is outside 0..9"):
        client_split(data, _context(10))


def test_torch_app_matches_the_numpy_app() -> None:
    pytest.importorskip("torch")
    numpy_app = load_app(NUMPY_APP, _context())
    torch_app = load_app(TORCH_APP, _context())
    assert isinstance(torch_app, ClientApp)
    params = torch_app.initial_params(0)
    assert all(np.array_equal(params[k], numpy_app.initial_params(0)[k]) for k in params)
    snapshot = {k: v.copy() for k, v in params.items()}
    config = {"epochs": 1, "round": 1, "proximal_mu": 0.01}
    from_torch = torch_app.train(params, config)
    from_numpy = numpy_app.train(params, config)
    assert all(np.array_equal(params[k], snapshot[k]) for k in params)
    assert list(from_torch.params) == list(params)
    assert all(v.dtype == np.float32 for v in from_torch.params.values())
    assert from_torch.num_examples == from_numpy.num_examples
    for k in params:  # same init, same shuffles, same maths: only float rounding differs
        np.testing.assert_allclose(from_torch.params[k], from_numpy.params[k], atol=1e-3)
    metrics = torch_app.validate(from_torch.params, {})
    assert metrics["accuracy"] == pytest.approx(
        numpy_app.validate(from_numpy.params, {})["accuracy"], abs=0.01
    )
