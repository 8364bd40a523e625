"""Property test from the broker's own OpenAPI document (schemathesis): whatever the generated
request — with or without the admin token — the broker answers, and never with a 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from cvm.attestation.kbs.app import create_app
from cvm.attestation.kbs.broker import Broker
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.trust import TrustRoots

ADMIN_TOKEN = "admin-token-for-the-fuzz-tests"
_SCRATCH = tempfile.TemporaryDirectory(prefix="cvm-kbs-fuzz-")
_BROKER = Broker(Storage(f"sqlite:///{Path(_SCRATCH.name) / 'kbs.db'}"), bytes(32),
                 TrustRoots.amd())
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_BROKER, ADMIN_TOKEN))


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_no_input_makes_the_broker_fail(case: schemathesis.Case) -> None:
    for headers in ({}, {"authorization": f"Bearer {ADMIN_TOKEN}"}):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.text[:300])
