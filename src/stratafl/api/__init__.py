"""The controller's REST API from Python: `ControllerClient` and the bodies it exchanges."""

from stratafl.api.client import ControllerClient
from stratafl.api.pages import walk
from stratafl.api.schema import (
    Assignment,
    AssignRequest,
    CertificateRequest,
    DiscoveryInfo,
    ErrorBody,
    Health,
    IssuedToken,
    SignedCertificate,
    TokenRequest,
)

__all__ = [
    "AssignRequest",
    "Assignment",
    "CertificateRequest",
    "ControllerClient",
    "DiscoveryInfo",
    "ErrorBody",
    "Health",
    "IssuedToken",
    "SignedCertificate",
    "TokenRequest",
    "walk",
]
