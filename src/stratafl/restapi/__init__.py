"""The controller's REST API from Python: `ControllerClient` and the bodies it exchanges."""

from stratafl.restapi.client import ControllerClient
from stratafl.restapi.pages import walk
from stratafl.restapi.schema import (
    Assignment,
    AssignRequest,
    CertificateRequest,
    DiscoveryInfo,
    ErrorBody,
    Health,
    IssuedToken,
    Session,
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
    "Session",
    "SignedCertificate",
    "TokenRequest",
    "walk",
]
