"""One emulated Milan vendor per test session (RSA-4096 roots are slow to derive)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cvm.amd import DEFAULT_SEED, Vendor

ISSUE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def milan_vendor() -> Vendor:
    return Vendor("Milan", DEFAULT_SEED, clock=lambda: ISSUE_TIME)
