"""The controller's REST API from Python: `ControllerClient` and the bodies it exchanges."""

from stratafl.api.client import ControllerClient
from stratafl.api.schema import Assignment, AssignRequest, DiscoveryInfo, ErrorBody, Health

__all__ = [
    "AssignRequest",
    "Assignment",
    "ControllerClient",
    "DiscoveryInfo",
    "ErrorBody",
    "Health",
]
