"""The key broker in process, for its fast tests (``test_*_units.py``) and their mutation runs.

One genuine CVM (on this process's emulated AMD root) is made once per process — during
collection when those tests are collected (see ``conftest.pytest_collection_finish``), so that
mutmut's fork server makes it once and every mutant's run inherits it. Each test gets a broker
on a fresh database, a clock it moves, and the guest's round trip as direct calls; the app's
tests serve that broker through httpx's ASGI transport, without a socket.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from cvm.attestation.kbs.app import create_app
from cvm.attestation.kbs.broker import Broker, BrokerSettings, ProblemError
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.jose import KeyPair
from cvm.formats.kbs.evidence import CvmEvidence
from cvm.formats.kbs.launch_evidence import LaunchEvidence, launch_report_data
from cvm.formats.kbs.rcar import Attestation
from cvm.scenarios.attested_guest import Cvm, Owner, emulated_owner, reference_json

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
KEK = bytes(range(32))
ADMIN_TOKEN = "admin-token-for-the-unit-tests"
SECRET_PATH = "default/disk/root-key"
SECRET = b"the volume key of the genuine CVM"
VTPM_PATH = "default/vtpm/state-key"
# A TCB minimum rolled out as a policy: reported SNP firmware below 30 is denied.
STRICT_POLICY = """package cvm.policy
import rego.v1
default allow := false
deny contains {"rule": "tcb.snp", "expected": ">= 30", "actual": sprintf("%d", [n]),
               "input": "reported_tcb"} if {
	n := input.claims.reported_tcb.snp
	n < 30
}
allow if count(deny) == 0
"""

VTPM_SECRET = b"the vTPM state key: 32 bytes ..."
AUTH = b'{"version": "0.4.0", "tee": "snp"}'
SESSION_TTL, TOKEN_TTL = 60.0, 120.0
DENIED = "attestation failed"


@dataclass(frozen=True)
class Guests:
    owner: Owner
    cvm: Cvm
    roots: TrustRoots
    reference: dict[str, Any]


@functools.cache
def guests() -> Guests:
    """The owner, its genuine CVM (attestation key made) and the reference values, once."""
    owner = emulated_owner(ISSUED)
    cvm = owner.launch(0)
    cvm.evidence("warm-up")
    return Guests(owner, cvm, TrustRoots.of([owner.vendor.trust_anchor()], "emulated"),
                  reference_json(owner))


class Clock:
    """A clock the test sets."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Random:
    """os.urandom, except that the next nonces (32 bytes) can be chosen by the test."""

    def __init__(self) -> None:
        self.nonces: list[bytes] = []

    def __call__(self, size: int) -> bytes:
        if size == 32 and self.nonces:
            return self.nonces.pop(0)
        return os.urandom(size)


@dataclass
class FastKbs:
    broker: Broker
    clock: Clock
    random: Random
    guests: Guests

    @property
    def key(self) -> KeyPair:
        return self.guests.cvm.tee_key

    def attestation(self, nonce: str, key: dict[str, str] | None = None) -> bytes:
        """The genuine CVM's Attestation payload for ``nonce``, binding ``key``."""
        public = key or self.key.public_jwk()
        payload = Attestation(nonce, public, self.guests.cvm.evidence(nonce, public))
        return json.dumps(payload.to_json()).encode()

    def launch_attestation(self, nonce: str) -> bytes:
        """The SVSM's launch evidence (its report alone) for ``nonce``."""
        cvm, public = self.guests.cvm, self.key.public_jwk()
        evidence = LaunchEvidence(cvm.guest.svsm.report(launch_report_data(nonce, public)),
                                  cvm.certificates.vcek, cvm.certificates.ask,
                                  cvm.certificates.ark)
        return json.dumps(Attestation(nonce, public, evidence).to_json()).encode()

    def evidence(self, nonce: str) -> CvmEvidence:
        return self.guests.cvm.evidence(nonce)

    def auth(self) -> tuple[str, str]:
        session_id, challenge = self.broker.auth(AUTH)
        return session_id, challenge["nonce"]

    def attest(self, key: dict[str, str] | None = None, launch: bool = False
               ) -> tuple[str, str]:
        """A genuine round trip: (session id, token)."""
        session_id, nonce = self.auth()
        body = self.launch_attestation(nonce) if launch else self.attestation(nonce, key)
        return session_id, self.broker.attest(session_id, body)

    def audit(self) -> list[dict[str, Any]]:
        return self.broker.storage.audit_log(1000)

    def last(self, outcome: str | None = None) -> dict[str, Any]:
        rows = [row for row in self.audit() if outcome is None or row["outcome"] == outcome]
        return rows[-1]

    def app(self) -> Any:
        return create_app(self.broker, ADMIN_TOKEN)


def make_kbs(url: str) -> FastKbs:
    """A broker on ``url`` with the owner's reference values and two secrets registered."""
    found, clock, random = guests(), Clock(), Random()
    broker = Broker(Storage(url), KEK, found.roots, clock=clock, random=random,
                    settings=BrokerSettings(session_ttl_seconds=SESSION_TTL,
                                            token_ttl_seconds=TOKEN_TTL))
    broker.set_reference(json.dumps(found.reference).encode())
    broker.set_secret(SECRET_PATH, SECRET)
    broker.set_secret(VTPM_PATH, VTPM_SECRET)
    return FastKbs(broker, clock, random, found)


FINDING_FIELDS = {"rule", "expected", "actual", "input"}


def rules(row: dict[str, Any]) -> set[str]:
    """The rules of an audit row's findings (each of which has the four fields)."""
    assert all(set(finding) == FINDING_FIELDS for finding in row["findings"]), row
    return {finding["rule"] for finding in row["findings"]}


def refused(call: Callable[[], object]) -> ProblemError:
    """The ProblemError ``call`` raises."""
    with pytest.raises(ProblemError) as raised:
        call()
    return raised.value


def request(app: Any, method: str, path: str, **options: Any) -> httpx.Response:
    """One request to ``app`` through httpx's ASGI transport."""

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kbs") as client:
            response = await client.request(method, path, **options)
            await response.aread()
            return response

    return asyncio.run(ask())
