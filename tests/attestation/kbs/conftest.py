"""A key broker on loopback (uvicorn in a thread) over SQLite — and over PostgreSQL when
``CVM_TEST_POSTGRES_URL`` names a server (CI starts one) — with an owner's genuine image
registered, and emulated CVMs to attest to it."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.attestation.kbs.app import create_app
from cvm.attestation.kbs.broker import Broker, BrokerSettings
from cvm.attestation.kbs.counters import counter_metadata
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.trust import TrustRoots
from cvm.scenarios.attested_guest import Owner, emulated_owner, reference_json

from . import units

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
ADMIN_TOKEN = "admin-token-for-the-tests"
SECRET_PATH = "default/disk/root-key"
SECRET = b"the volume key of the genuine CVM"
POSTGRES_URL = os.environ.get("CVM_TEST_POSTGRES_URL")


class Clock:
    """Wall time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Kbs:
    url: str
    broker: Broker
    clock: Clock
    owner: Owner

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"authorization": f"Bearer {ADMIN_TOKEN}"})

    def audit(self) -> list[dict[str, object]]:
        with self.admin() as client:
            rows = client.get("/kbs/v0/audit", params={"limit": 1000}).json()
        assert isinstance(rows, list)
        return rows

    def last_denial(self) -> dict[str, object]:
        return next(row for row in reversed(self.audit()) if row["outcome"] in (
            "denied", "refused"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def owner() -> Owner:
    """The owner, its CVMs on this installation's emulated AMD root (the one ``cvm attest``
    uses, kept in the tests' own XDG_DATA_HOME)."""
    root = RootStore.for_workspace(DEFAULT_WORKSPACE).root("Milan", create=True)
    return emulated_owner(ISSUED, root=root)


def _fresh_postgres(url: str) -> str:
    storage = Storage(url)
    counter_metadata.create_all(storage.engine)  # the rollback counters' own table
    with storage.engine.begin() as db:
        for table in ("kbs_sessions", "kbs_used_reports", "kbs_tokens", "kbs_secrets",
                      "kbs_documents", "kbs_keys", "kbs_audit", "kbs_counters"):
            db.execute(text(f"DELETE FROM {table}"))
    storage.engine.dispose()
    return url


def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh database of ``backend`` (sqlite, or postgresql when the tests have a server)."""
    if backend == "postgresql":
        if not POSTGRES_URL:
            pytest.skip("CVM_TEST_POSTGRES_URL is not set (CI sets it)")
        return _fresh_postgres(POSTGRES_URL)
    return f"sqlite:///{Path(tmp_path_factory.mktemp('kbs')) / 'kbs.db'}"


@contextmanager
def serving(broker: Broker) -> Iterator[str]:
    """``broker`` served by uvicorn on a free loopback port (in a thread); yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(broker, ADMIN_TOKEN), host="127.0.0.1",
                                           port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        broker.storage.engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def kbs(request: pytest.FixtureRequest, owner: Owner, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Kbs]:
    url = database_url(request.param, tmp_path_factory)
    clock = Clock()
    roots = TrustRoots.of([owner.vendor.trust_anchor()], "emulated")
    broker = Broker(Storage(url), bytes(range(32)), roots, clock=clock,
                    settings=BrokerSettings(session_ttl_seconds=60, token_ttl_seconds=120))
    with serving(broker) as address:
        yield from _registered(Kbs(address, broker, clock, owner))


def _registered(service: Kbs) -> Iterator[Kbs]:
    with service.admin() as admin:
        import json

        assert admin.post("/kbs/v0/reference-values",
                          content=json.dumps(reference_json(service.owner))).status_code == 200
        assert admin.post(f"/kbs/v0/resource/{SECRET_PATH}", content=SECRET).status_code == 200
    yield service


def pytest_collection_finish(session: pytest.Session) -> None:
    """The fast tests' genuine CVM is made while collecting them: mutmut's fork server collects
    once and forks a run per mutant, which then inherits it."""
    if any(item.path.name.endswith("_units.py") for item in session.items):
        units.guests()


@pytest.fixture(params=["sqlite", "postgresql"])
def fast_kbs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[units.FastKbs]:
    """A broker in process on a fresh database, the genuine CVM's reference values and secrets
    registered (:mod:`.units`)."""
    service = units.make_kbs(database_url(request.param, tmp_path_factory))
    yield service
    service.broker.storage.engine.dispose()
