"""The broker's database on its own: single use enforced by the database, a replay recording
nothing, the sweep's boundaries, documents' versions, the audit log's paging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from cvm.attestation.kbs.storage import Sealed, Storage, open_engine
from cvm.errors import UsageError

from .conftest import database_url

T = 1000.0


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Storage:
    store = Storage(database_url(request.param, tmp_path_factory))
    request.addfinalizer(store.engine.dispose)
    return store


def _row(storage: Storage, outcome: str = "denied") -> dict[str, object]:
    return storage.audit_row("attest", outcome, [{"rule": "r", "expected": "e", "actual": "a",
                                                 "input": "i"}], session_id="s1", at=T)


def _count(storage: Storage, table: str) -> int:
    with storage.engine.begin() as db:
        return int(db.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_urls(tmp_path: Path) -> None:
    for url in ("sqlite:///:memory:", "sqlite://", "sqlite:///", "sqlite+pysqlite:///:memory:"):
        with pytest.raises(UsageError, match="in-memory"):
            open_engine(url)
    for url in ("mysql://db/kbs", f"{tmp_path}/kbs.db"):
        with pytest.raises(UsageError, match="expected sqlite"):
            open_engine(url)
    engine = open_engine("postgresql+psycopg://kbs@127.0.0.1:1/kbs")  # no connection yet
    assert engine.dialect.name == "postgresql"
    engine.dispose()


def test_tables_created_by_another_worker_meanwhile(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import IntegrityError as DbIntegrityError

    from cvm.attestation.kbs import storage as module

    real, calls = module.metadata.create_all, []

    def racing(bind: object) -> None:
        calls.append(bind)
        if len(calls) == 1:  # the other worker's CREATE TABLE won
            raise DbIntegrityError("CREATE TABLE", {}, Exception("exists"))
        real(bind)  # type: ignore[arg-type]

    monkeypatch.setattr(module.metadata, "create_all", racing)
    store = Storage(f"sqlite:///{tmp_path / 'kbs.db'}")
    store.create_session("s", "n", "snp", T, 60)
    assert len(calls) == 2 and store.session("s") is not None
    store.engine.dispose()


def test_sqlite_is_set_up_for_workers_sharing_the_file(tmp_path: Path) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'kbs.db'}")
    with storage.engine.connect() as db:
        assert db.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert db.execute(text("PRAGMA busy_timeout")).scalar_one() == 30000
        assert db.execute(text("PRAGMA synchronous")).scalar_one() == 1  # NORMAL
    Storage(storage.url)  # a second worker on the same file
    storage.engine.dispose()


def test_a_nonce_is_consumed_once_and_only_while_live(storage: Storage) -> None:
    storage.put_document("reference", "default", "the reference")
    storage.put_document("reference", "default", "the reference, again")
    storage.put_document("policy", "other", "another policy")
    storage.create_session("s1", "n1", "snp", T, 60)
    session = storage.session("s1")
    assert session is not None
    assert (session["nonce"], session["state"], session["created"], session["expires"]) == (
        "n1", "challenged", T, T + 60)
    wanted = [("reference", "default"), ("policy", "default")]
    assert storage.consume_nonce("s1", T + 60, wanted) == (None, {})  # at its expiry: gone
    consumed, documents = storage.consume_nonce("s1", T + 59.5, wanted)
    assert consumed is not None and (consumed["id"], consumed["nonce"]) == ("s1", "n1")
    assert consumed["state"] == "attesting" and consumed["tee"] == "snp"
    assert documents == {("reference", "default"): ("the reference, again", 2)}
    assert storage.consume_nonce("s1", T, wanted) == (None, {})  # once
    assert storage.consume_nonce("nobody", T) == (None, {})
    storage.create_session("s2", "n2", "snp", T, 60)
    assert storage.consume_nonce("s2", T)[1] == {}  # nothing wanted, nothing read


def test_an_attestation_is_recorded_whole_and_a_replay_not_at_all(storage: Storage) -> None:
    storage.create_session("s1", "n1", "snp", T, 60)
    storage.create_session("s2", "n2", "snp", T, 60)
    key = {"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}
    assert storage.finish_attestation("s1", True, key, "tok1", T, T + 120,
                                      _row(storage, "affirmed"), "d1")
    session = storage.session("s1")
    assert session is not None
    assert (session["state"], session["token_id"], session["expires"]) == (
        "attested", "tok1", T + 120)
    assert json.loads(session["tee_pubkey"]) == key
    with storage.engine.begin() as db:
        token = db.execute(text("SELECT * FROM kbs_tokens")).mappings().one()
        report = db.execute(text("SELECT * FROM kbs_used_reports")).mappings().one()
    assert dict(token) == {"id": "tok1", "session_id": "s1", "issued": T, "expires": T + 120,
                           "status": "affirming"}
    assert dict(report) == {"digest": "d1", "session_id": "s1", "at": T}
    audit = storage.audit_log()
    assert len(audit) == 1 and audit[0]["outcome"] == "affirmed"
    assert audit[0]["findings"][0]["rule"] == "r" and audit[0]["session_id"] == "s1"

    # the same report again: nothing of the second session's outcome is kept
    assert not storage.finish_attestation("s2", True, key, "tok2", T, T + 120,
                                          _row(storage, "affirmed"), "d1")
    again = storage.session("s2")
    assert again is not None and (again["state"], again["token_id"]) == ("challenged", None)
    assert _count(storage, "kbs_tokens") == 1 and len(storage.audit_log()) == 1

    assert storage.finish_attestation("s2", False, key, None, T + 5, T + 500, _row(storage),
                                      "d2")  # a denial ends the session, whatever expires says
    denied = storage.session("s2")
    assert denied is not None and (denied["state"], denied["expires"]) == ("denied", T + 5)
    assert _count(storage, "kbs_tokens") == 1

    storage.create_session("s3", "n3", "snp", T, 60)
    storage.finish_attestation("s3", True, key, "tok3", T, T + 9, _row(storage), "d3",
                               state="launch-attested")
    launch = storage.session("s3")
    assert launch is not None and launch["state"] == "launch-attested"


def test_deny_session(storage: Storage) -> None:
    storage.create_session("s1", "n1", "snp", T, 60)
    storage.create_session("s2", "n2", "snp", T, 60)
    storage.deny_session("s1", T + 3, _row(storage))
    denied, other = storage.session("s1"), storage.session("s2")
    assert denied is not None and (denied["state"], denied["expires"]) == ("denied", T + 3)
    assert other is not None and other["state"] == "challenged"
    assert [row["outcome"] for row in storage.audit_log()] == ["denied"]


def test_session_and_secret_in_one_read(storage: Storage) -> None:
    storage.create_session("s1", "n1", "snp", T, 60)
    storage.put_secret("a/b/c", Sealed(b"i" * 12, b"old", b"t" * 16))
    storage.put_secret("a/b/c", Sealed(b"j" * 12, b"cipher", b"u" * 16))  # replaced
    session, sealed = storage.session_and_secret("s1", "a/b/c")
    assert session is not None and session["id"] == "s1" and session["nonce"] == "n1"
    assert sealed == Sealed(b"j" * 12, b"cipher", b"u" * 16) == storage.secret("a/b/c")
    assert storage.session_and_secret(None, "a/b/c") == (None, sealed)
    assert storage.session_and_secret("", "a/b/c") == (None, sealed)
    assert storage.session_and_secret("nobody", "a/b/d") == (None, None)
    assert storage.secret("a/b/d") is None and _count(storage, "kbs_secrets") == 1


def test_the_sweep_keeps_what_is_still_live(storage: Storage) -> None:
    for name, expires in (("gone", T - 1), ("last", T)):
        storage.create_session(name, "n", "snp", expires - 60, 60)
        storage.finish_attestation(name, True, {}, f"tok-{name}", expires - 60, expires,
                                   _row(storage), f"report-{name}")
    storage.create_session("young", "n", "snp", T, 60)
    assert storage.purge(T, 61) == 1
    assert storage.session("gone") is None and storage.session("last") is not None
    with storage.engine.begin() as db:
        assert db.execute(text("SELECT id FROM kbs_tokens")).scalars().all() == ["tok-last"]
    # the reports, presented at T - 61 and T - 60, are kept for as long as asked
    assert _count(storage, "kbs_used_reports") == 2
    assert storage.purge(T, 60) == 0
    assert _count(storage, "kbs_used_reports") == 1
    assert storage.purge(T, 59) == 0 and _count(storage, "kbs_used_reports") == 0


def test_keys_are_stored_once(storage: Storage) -> None:
    first, second = Sealed(b"1" * 12, b"one", b"1" * 16), Sealed(b"2" * 12, b"two", b"2" * 16)
    assert storage.key("k") is None
    storage.add_key_once("k", first)
    storage.add_key_once("k", second)  # another worker, later: the first one stays
    assert storage.key("k") == first and storage.key("other") is None


def test_documents_are_versioned_by_kind_and_id(storage: Storage) -> None:
    assert storage.put_document("policy", "default", "p1") == 1
    assert storage.put_document("policy", "default", "p2") == 2
    assert storage.put_document("policy", "strict", "s1") == 1
    assert storage.put_document("reference", "default", "r1") == 1
    assert storage.put_document("policy", "default", "p3") == 3
    with storage.engine.begin() as db:
        rows = db.execute(text("SELECT kind, id, body, version FROM kbs_documents "
                               "ORDER BY kind, id")).all()
    assert [tuple(row) for row in rows] == [("policy", "default", "p3", 3),
                                            ("policy", "strict", "s1", 1),
                                            ("reference", "default", "r1", 1)]


def test_the_audit_log_pages_in_order(storage: Storage) -> None:
    for index in range(5):
        storage.log("admin", "secret", [{"rule": str(index)}], subject=f"x{index}",
                    session_id=f"s{index}", chip_id="c", at=T + index)
    storage.log("resource", "released", [])  # no time given: the time now
    rows = storage.audit_log()
    assert [row["subject"] for row in rows] == ["x0", "x1", "x2", "x3", "x4", None]
    assert rows[2] == {"id": rows[2]["id"], "at": T + 2, "session_id": "s2", "action": "admin",
                       "outcome": "secret", "subject": "x2", "chip_id": "c",
                       "findings": [{"rule": "2"}]}
    assert isinstance(rows[5]["at"], float) and rows[5]["at"] > T + 4
    assert [row["subject"] for row in storage.audit_log(2)] == ["x0", "x1"]
    after = rows[1]["id"]
    assert [row["subject"] for row in storage.audit_log(2, after)] == ["x2", "x3"]
    assert storage.audit_log(10, rows[5]["id"]) == []
    assert storage.audit_row("a", "o", [])["at"] is not None
    for _ in range(95):
        storage.log("admin", "secret", [], at=T)
    assert len(storage.audit_log()) == 100 and len(storage.audit_log(1000)) == 101


@pytest.mark.parametrize(("orig", "said"), [
    (ConnectionRefusedError("connection failed: refused\nIs the server running?"),
     "connection failed: refused"),
    (ConnectionRefusedError("  \n"), "ConnectionRefusedError"),
    (RuntimeError(""), "RuntimeError"),
])
def test_why_a_database_is_unreachable_is_the_drivers_first_line(orig: Exception,
                                                                 said: str) -> None:
    from sqlalchemy.exc import OperationalError

    from cvm.attestation.kbs.storage import unreachable

    assert unreachable(OperationalError("SELECT 1", None, orig)) == said


def test_a_database_url_is_printed_without_its_password() -> None:
    from sqlalchemy import create_engine

    from cvm.attestation.kbs.storage import redacted

    engine = create_engine("sqlite:///kbs.db")
    assert redacted(engine) == "sqlite:///kbs.db"
    assert "pw" not in redacted(create_engine("postgresql+psycopg://u:pw@h/db"))
