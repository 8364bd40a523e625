"""PostgreSQL's pooled connections: one the server ended is replaced without a round trip; one
idle for a while is pinged; a busy one is used as it is."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from cvm.attestation.kbs import storage as kbs_storage
from cvm.attestation.kbs.storage import Storage

from .conftest import POSTGRES_URL

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="CVM_TEST_POSTGRES_URL is not set "
                                                         "(CI sets it)")


def _kill_other_connections(url: str) -> None:
    """The server ends every other connection to the database (as a restart would)."""
    others = ("FROM pg_stat_activity WHERE datname = current_database() "
              "AND pid <> pg_backend_pid()")
    killer = Storage(url)
    with killer.engine.connect() as db:
        db.execute(text(f"SELECT pg_terminate_backend(pid) {others}"))
        for _ in range(500):  # until the ended backends are gone (their last word was sent)
            if not db.execute(text(f"SELECT count(*) {others}")).scalar_one():
                break
            time.sleep(0.01)
    killer.engine.dispose()


def _used(storage: Storage) -> None:
    storage.log("test", "ok", [], at=1.0)  # one round-trip statement on a pooled connection


@pytest.fixture
def storage() -> Storage:
    assert POSTGRES_URL is not None
    storage = Storage(POSTGRES_URL)
    _used(storage)
    _kill_other_connections(POSTGRES_URL)
    return storage


def test_a_connection_the_server_ended_is_replaced(storage: Storage,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kbs_storage, "IDLE_PING_SECONDS", 3600.0)  # no ping: seen locally
    _used(storage)
    storage.engine.dispose()


def test_an_idle_connection_is_pinged(storage: Storage,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer gone without a word is not seen locally; the ping finds it."""
    monkeypatch.setattr(kbs_storage, "_server_spoke", lambda _connection: False)
    monkeypatch.setattr(kbs_storage, "IDLE_PING_SECONDS", -1.0)  # every connection is idle
    _used(storage)
    storage.engine.dispose()


def test_a_busy_connection_is_used_as_it_is(storage: Storage,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither check: the dead connection fails its statement (what the checks prevent), and
    the pool drops it, so the next call connects anew."""
    monkeypatch.setattr(kbs_storage, "_server_spoke", lambda _connection: False)
    monkeypatch.setattr(kbs_storage, "IDLE_PING_SECONDS", 3600.0)
    with pytest.raises(storage.engine.dialect.loaded_dbapi.OperationalError):
        _used(storage)
    _used(storage)
    storage.engine.dispose()


def test_a_worker_outlives_its_database_connections() -> None:
    """PostgreSQL drops a worker's pooled connection (a restart, a failover, an idle
    timeout): the next request gets a fresh one, not an error."""
    assert POSTGRES_URL is not None
    storage = Storage(POSTGRES_URL)
    with storage._driver() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    _kill_other_connections(POSTGRES_URL)
    storage.create_session("s-outlives", "n1", "snp", 1.0, 60)
    assert storage.session("s-outlives") is not None
    with storage._driver() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid
    storage.engine.dispose()
