"""Fuzz the whole REST API against its own OpenAPI document (schemathesis, in-process).

For every operation, schemathesis generates requests from the operation's schemas: valid
ones (positive) and ones that break the schema (negative: wrong types, out-of-range
numbers, missing fields, odd strings). Each goes through the ASGI app with a valid token
of a role the operation admits (an admin's wherever an admin may call), so the requests
reach the endpoints rather than stopping at the auth check. Every answer must be a non-5xx
that matches the response the document declares for its status.

About 9 ms per request here: EXAMPLES per operation and mode keeps it under a minute.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from stratafl.controller.rest.app import create_api
from stratafl.security import Role
from stratafl.security.policy import REST_ROLES
from tests.support.controllers import open_controller
from tests.support.fuzz import fuzz_budget

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(900)]  # ~35 operations x 2 modes x 40

EXAMPLES = fuzz_budget("rest", 40)
"""Requests generated per operation and mode (positive, negative): 40 by default (100 took
90-130 s here, over the suite's budget once the API grew), ``STRATA_FUZZ_REST_EXAMPLES``
for more."""
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture
def controller(tmp_path):
    with open_controller(tmp_path, secure=True) as controller:
        register = controller.discovery.register("k1", "127.0.0.1:7001", 100_000)
        asyncio.run(register)  # assign can succeed
        controller.events.close()  # event streams answer 503 (declared) instead of never ending
        yield controller


def _caller_role(method: str, path: str) -> Role:
    allowed = REST_ROLES[(method, path)]
    return Role.ADMIN if not allowed or Role.ADMIN in allowed else min(allowed)


def _fuzz(
    operation: APIOperation, mode: GenerationMode, headers: dict[str, str], failures: list[str]
) -> int:
    """Send EXAMPLES generated requests to ``operation``; returns how many were sent."""
    sent = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,  # nothing written into the checkout
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        nonlocal sent
        sent += 1
        response = case.call(headers=headers)
        try:
            case.validate_response(response, checks=_checks(operation), headers=headers)
        except FailureGroup as failure:  # collected: one report for the whole run
            failures.append(f"{operation.label} ({mode.value}): {failure}")

    fuzz()
    return sent


def _checks(operation: APIOperation) -> list:
    """An event stream answers its declared 503 here (the feed is closed: a stream that
    never ends cannot be read in-process); every other 5xx is a failure."""
    if operation.path.endswith("/events/stream"):
        return [response_schema_conformance]
    return CHECKS


def _modes(operation: APIOperation) -> list[GenerationMode]:
    """Both modes; an operation that takes no input at all has nothing to break."""
    if list(operation.iter_parameters()) or len(operation.body):
        return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    return [GenerationMode.POSITIVE]


def test_no_request_the_schema_describes_makes_a_5xx_or_an_undeclared_answer(controller):
    assert controller.trust is not None
    tokens = {
        role: controller.trust.issue(
            controller.store,
            name=f"fuzz {role}",
            subject=f"fuzz-{role}",
            role=role,
            ttl_seconds=3600,
        )[0]
        for role in Role
    }
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_api(controller))
    sent: dict[str, int] = {}
    failures: list[str] = []
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        token = tokens[_caller_role(operation.method.upper(), operation.path)]
        headers = {"Authorization": f"Bearer {token}"}
        sent[operation.label] = sum(
            _fuzz(operation, mode, headers, failures) for mode in _modes(operation)
        )
    seconds = time.monotonic() - started
    total = sum(sent.values())
    print(
        f"\nfuzzed {len(sent)} operations with {total} requests in {seconds:.0f} s: "
        f"{len(failures)} failures"
    )
    assert len(sent) == len(REST_ROLES)
    assert min(sent.values()) > 0  # every operation was exercised
    assert failures == [], "\n\n".join(failures[:5])
