"""stratafl: three-tier federated learning (clients, combiners, controller)."""

from importlib.metadata import PackageNotFoundError, version

from stratafl.client.app import ClientApp, ClientContext, TrainResult
from stratafl.errors import StrataError
from stratafl.params import Params, TensorSpec

__all__ = ["ClientApp", "ClientContext", "Params", "StrataError", "TensorSpec", "TrainResult"]

try:
    __version__ = version("stratafl")
    """The installed distribution's version: setuptools-scm derives it from git at build time."""
except PackageNotFoundError:  # sources on sys.path without an install (PYTHONPATH=src)
    __version__ = "0+unknown"
