"""Marks that say how a test may share the machine when the suite runs on several workers
(pytest-xdist, ``--dist loadgroup``: scripts/test.sh)."""

from __future__ import annotations

import pytest

HEAVY = pytest.mark.xdist_group("heavy")
"""Tests that load the machine or measure it (network namespaces, chaos, memory bounds, a
browser): every test so marked runs on one worker, one after another, never two at once,
while the other workers go on with light tests."""
