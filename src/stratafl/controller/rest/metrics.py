"""``GET /metrics``: the controller's Prometheus metrics, for admins only.

Prometheus scrapes it with the admin token it is given (``authorization: credentials_file``
in its scrape config, docs/operations.md); the route sits in `REST_ROLES` like every
other. The registry is the controller's own (`Controller.metrics`), read on the event
loop, where the parts its gauges read (discovery, the session loop) live.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import Response

from stratafl.observe.metrics import CONTENT_TYPE, exposition

if TYPE_CHECKING:
    from stratafl.controller.wiring import Controller

__all__ = ["METRICS_PATH", "metrics_router"]

METRICS_PATH = "/metrics"

_EXPOSITION: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format 0.0.4 (docs/operations.md)",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


def metrics_router(controller: Controller) -> APIRouter:
    router = APIRouter()

    @router.get(METRICS_PATH, response_class=Response, responses=_EXPOSITION)
    async def metrics() -> Response:
        """Every metric of the controller, in the format Prometheus scrapes."""
        return Response(exposition(controller.metrics.registry), media_type=CONTENT_TYPE)

    return router
