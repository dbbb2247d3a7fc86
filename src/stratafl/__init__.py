"""stratafl: three-tier federated learning (clients, combiners, controller)."""

from stratafl.client.app import ClientApp, ClientContext, TrainResult
from stratafl.errors import StrataError
from stratafl.params import Params, TensorSpec

__all__ = ["ClientApp", "ClientContext", "Params", "StrataError", "TensorSpec", "TrainResult"]
__version__ = "0.1.0"
