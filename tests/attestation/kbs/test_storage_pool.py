"""PostgreSQL's pooled connections: pinged only after they sat idle, replaced when dead."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from cvm.attestation.kbs import storage as kbs_storage
from cvm.attestation.kbs.storage import Storage

from .conftest import POSTGRES_URL

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="CVM_TEST_POSTGRES_URL is not set "
                                                         "(CI sets it)")


def _kill_other_connections(url: str) -> None:
    """The server drops every other connection to the database (as a restart would)."""
    killer = Storage(url)
    with killer.engine.connect() as db:
        db.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    killer.engine.dispose()


def _used(storage: Storage) -> None:
    storage.log("test", "ok", [], at=1.0)  # one round-trip statement on a pooled connection


def test_a_connection_idle_long_enough_is_pinged_and_replaced(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert POSTGRES_URL is not None
    storage = Storage(POSTGRES_URL)
    _used(storage)
    _kill_other_connections(POSTGRES_URL)
    monkeypatch.setattr(kbs_storage, "IDLE_PING_SECONDS", -1.0)  # every connection is idle
    _used(storage)  # the dead connection was found by the ping and replaced
    storage.engine.dispose()


def test_a_busy_connection_is_not_pinged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ping a dead connection fails its statement: the ping is what saves it."""
    assert POSTGRES_URL is not None
    storage = Storage(POSTGRES_URL)
    _used(storage)
    _kill_other_connections(POSTGRES_URL)
    monkeypatch.setattr(kbs_storage, "IDLE_PING_SECONDS", 3600.0)
    with pytest.raises(storage.engine.dialect.loaded_dbapi.OperationalError):
        _used(storage)
    _used(storage)  # the pool dropped the dead connection: the next call reconnects
    storage.engine.dispose()
