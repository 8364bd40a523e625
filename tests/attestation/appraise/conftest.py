"""An owner, its reference values and genuine CVMs for the appraisal tests (built once)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cvm.attestation.verifier.reference import ReferenceDocument
from cvm.attestation.verifier.rego_policy import RegoPolicy
from cvm.attestation.verifier.trust import TrustRoots
from cvm.scenarios.attested_guest import Cvm, Owner, emulated_owner, reference_json

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def owner() -> Owner:
    return emulated_owner(ISSUED)


@pytest.fixture(scope="session")
def genuine(owner: Owner) -> Cvm:
    return owner.launch(0)


@pytest.fixture(scope="session")
def reference(owner: Owner) -> ReferenceDocument:
    return ReferenceDocument.from_json(reference_json(owner))


@pytest.fixture(scope="session")
def roots(owner: Owner) -> TrustRoots:
    return TrustRoots.of([owner.vendor.trust_anchor()], "emulated")


@pytest.fixture(scope="session")
def policy() -> RegoPolicy:
    return RegoPolicy()
