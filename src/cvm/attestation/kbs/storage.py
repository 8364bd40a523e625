"""The broker's database: sessions, nonces, tokens, secrets, reference values, policies, audit.

Everything a request depends on lives here, not in a process, so several workers — and several
machines behind a load balancer — serve one fleet. SQLAlchemy Core on SQLite (the default; WAL
journal and a busy timeout so workers share the file) or PostgreSQL (by URL). Single-use is
enforced by the database: a session's nonce is consumed by an ``UPDATE ... WHERE state =
'challenged'`` that only one request can win, and a report can be presented once (primary key).

The tables are declared, created and administered through SQLAlchemy Core. The statements of a
guest's round trip (open a session, consume its nonce, record the outcome, read the session and
the secret, log the release) are plain SQL that both databases accept, run on the pooled
driver connection: SQLAlchemy's statement compilation would cost more than the database does.
"""

from __future__ import annotations

import errno
import json
import select as _select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from cvm.errors import UsageError

metadata = MetaData()
sessions = Table(
    "kbs_sessions", metadata,
    Column("id", String(64), primary_key=True),
    Column("nonce", String(64), nullable=False),
    Column("tee", String(32), nullable=False),
    Column("state", String(16), nullable=False),  # challenged | attesting | attested |
    # launch-attested | denied
    Column("created", Float, nullable=False),
    Column("expires", Float, nullable=False),
    Column("tee_pubkey", Text),
    Column("token_id", String(64)),
)
used_reports = Table(
    "kbs_used_reports", metadata,
    Column("digest", String(96), primary_key=True),
    Column("session_id", String(64), nullable=False),
    Column("at", Float, nullable=False),
)
tokens = Table(
    "kbs_tokens", metadata,
    Column("id", String(64), primary_key=True),
    Column("session_id", String(64), nullable=False),
    Column("issued", Float, nullable=False),
    Column("expires", Float, nullable=False),
    Column("status", String(32), nullable=False),
)
secrets = Table(
    "kbs_secrets", metadata,
    Column("path", String(400), primary_key=True),
    Column("iv", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("tag", LargeBinary, nullable=False),
)
documents = Table(  # reference values and policies, by kind and id
    "kbs_documents", metadata,
    Column("kind", String(32), primary_key=True),
    Column("id", String(128), primary_key=True),
    Column("body", Text, nullable=False),
    Column("version", Integer, nullable=False),
)
broker_keys = Table(
    "kbs_keys", metadata,
    Column("name", String(64), primary_key=True),
    Column("iv", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("tag", LargeBinary, nullable=False),
)
audit = Table(
    "kbs_audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("session_id", String(64)),
    Column("action", String(32), nullable=False),  # attest | resource | admin
    Column("outcome", String(32), nullable=False),  # affirmed | denied | released | refused
    Column("subject", String(400)),
    Column("chip_id", String(128)),
    Column("findings", Text, nullable=False),
)


@dataclass(frozen=True)
class Sealed:
    iv: bytes
    ciphertext: bytes
    tag: bytes


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


IDLE_PING_SECONDS = 10.0


def _checked_in(_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _server_spoke(connection: Any) -> bool:
    """Whether the server sent something to an idle connection: PostgreSQL only does so to
    end it (a restart, a failover, an administrator, an idle timeout). A local check."""
    readable, _, _ = _select.select([connection.fileno()], [], [], 0)
    return bool(readable)


def _check_connection(connection: Any, record: Any, _proxy: Any) -> None:
    """Hand out a live server connection; a dead one is replaced (the pool retries).

    A connection the server ended is seen locally (its socket is readable while idle); one
    idle for a while is pinged as well (a peer gone without a word). A busy broker's
    connections are not pinged: a ping is a round trip to the server, as dear as a statement."""
    try:
        if _server_spoke(connection):
            raise DisconnectionError("the server ended the connection")
        if time.monotonic() - record.info.get("idle_since", float("-inf")) > IDLE_PING_SECONDS:
            cursor = connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            connection.rollback()
    except DisconnectionError:
        raise
    except Exception as error:  # the driver's own error classes: the connection is gone
        raise DisconnectionError(str(error)) from None


def unreachable(error: OperationalError) -> str:
    """The driver's first line on why it could not connect."""
    lines = str(error.orig).strip().splitlines() or [type(error.orig).__name__]
    return lines[0]


def redacted(engine: Engine) -> str:
    """The engine's URL as it may be printed: without its password."""
    return engine.url.render_as_string(hide_password=True)


def open_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
    if url.startswith("sqlite"):
        if ":memory:" in url or url in ("sqlite://", "sqlite:///"):
            raise UsageError("--db: an in-memory SQLite database cannot be shared; give a file")
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    elif url.startswith("postgresql"):
        engine = create_engine(url, pool_size=8, max_overflow=8)
        event.listen(engine, "checkin", _checked_in)
        event.listen(engine, "checkout", _check_connection)
    else:
        raise UsageError(f"--db {url!r}: expected sqlite:///FILE or postgresql+psycopg://...")
    return engine


_SESSION_COLUMNS = ("id", "nonce", "tee", "state", "created", "expires", "tee_pubkey",
                    "token_id")
_SESSION_SELECT = ", ".join(_SESSION_COLUMNS)
_AUDIT_COLUMNS = ("at", "session_id", "action", "outcome", "subject", "chip_id", "findings")
_AUDIT_INSERT = (f"INSERT INTO kbs_audit ({', '.join(_AUDIT_COLUMNS)}) "
                 f"VALUES ({', '.join('{}' for _ in _AUDIT_COLUMNS)})")
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


class DriverTransaction:
    """``with`` block over one pooled driver connection: its cursor, in one transaction,
    committed when the block ends and rolled back if the block or the commit raises; the cursor
    is closed and the connection goes back to the pool either way. (A class, not a decorated
    generator, so that mutation testing reaches the commit and rollback decisions.)"""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.cursor: Any = None

    def __enter__(self) -> Any:
        try:
            self.cursor = self.connection.cursor()
        except BaseException:
            self.connection.close()
            raise
        return self.cursor

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: object) -> None:
        try:
            if kind is None:
                try:
                    self.connection.commit()
                except BaseException:
                    self.connection.rollback()
                    raise
            else:
                self.connection.rollback()
        finally:
            try:
                self.cursor.close()
            finally:
                self.connection.close()  # back to the pool


class Storage:
    """The broker's tables on one engine; every method is one short transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = open_engine(url)
        try:
            try:
                metadata.create_all(self.engine)
            except DbIntegrityError:  # another worker created them at the same moment
                metadata.create_all(self.engine)
        except OperationalError as error:  # no such file or server, refused, no access
            raise OSError(errno.EIO, f"cannot open the database ({unreachable(error)})",
                          redacted(self.engine)) from None
        self._placeholder = _PLACEHOLDERS[self.engine.dialect.paramstyle]
        self._integrity_error: type[Exception] = self.engine.dialect.loaded_dbapi.IntegrityError

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    def _sql(self, template: str) -> str:
        """``template`` with each ``{}`` made the driver's placeholder."""
        return template.replace("{}", self._placeholder)

    def _driver(self) -> DriverTransaction:
        """A cursor on a pooled driver connection, in one transaction."""
        return DriverTransaction(self.engine.raw_connection())

    # ---- sessions and nonces -------------------------------------------------------------
    def create_session(self, session_id: str, nonce: str, tee: str, now: float,
                       ttl: float) -> None:
        with self._driver() as cursor:
            cursor.execute(self._sql(
                "INSERT INTO kbs_sessions (id, nonce, tee, state, created, expires) "
                "VALUES ({}, {}, {}, 'challenged', {}, {})"),
                (session_id, nonce, tee, now, now + ttl))

    def session(self, session_id: str) -> dict[str, Any] | None:
        with self._tx() as db:
            row = db.execute(select(sessions).where(sessions.c.id == session_id)).mappings()
            found = row.first()
            return dict(found) if found is not None else None

    def consume_nonce(self, session_id: str, now: float,
                      wanted: list[tuple[str, str]] | None = None
                      ) -> tuple[dict[str, Any] | None, dict[tuple[str, str], tuple[str, int]]]:
        """Move a live, challenged session to 'attesting' (None if another request did, or it
        expired, or it does not exist), and read the ``wanted`` documents, in one transaction."""
        with self._driver() as cursor:
            cursor.execute(self._sql(
                "UPDATE kbs_sessions SET state = 'attesting' WHERE id = {} AND "
                f"state = 'challenged' AND expires > {{}} RETURNING {_SESSION_SELECT}"),
                (session_id, now))
            row = cursor.fetchone()
            if row is None:
                return None, {}
            found: dict[tuple[str, str], tuple[str, int]] = {}
            for kind, doc_id in wanted or []:
                cursor.execute(self._sql(
                    "SELECT body, version FROM kbs_documents WHERE kind = {} AND id = {}"),
                    (kind, doc_id))
                document = cursor.fetchone()
                if document is not None:
                    found[(kind, doc_id)] = (document[0], document[1])
            return dict(zip(_SESSION_COLUMNS, row, strict=True)), found

    def finish_attestation(self, session_id: str, accepted: bool, tee_pubkey: dict[str, str],
                           token_id: str | None, issued: float, expires: float,
                           audit_row: dict[str, Any], report_digest: str,
                           state: str = "attested") -> bool:
        """Record the presented report, the outcome and its audit row in one transaction; an
        accepted session goes to ``state`` (``attested``, or ``launch-attested`` for launch
        evidence). False, with nothing recorded, if the report was presented before (a
        replay)."""
        try:
            with self._driver() as cursor:
                cursor.execute(self._sql(
                    "INSERT INTO kbs_used_reports (digest, session_id, at) VALUES ({}, {}, {})"),
                    (report_digest, session_id, issued))
                cursor.execute(self._sql(_AUDIT_INSERT),
                               tuple(audit_row[name] for name in _AUDIT_COLUMNS))
                cursor.execute(self._sql(
                    "UPDATE kbs_sessions SET state = {}, tee_pubkey = {}, token_id = {}, "
                    "expires = {} WHERE id = {}"),
                    (state if accepted else "denied", json.dumps(tee_pubkey), token_id,
                     expires if accepted else issued, session_id))
                if token_id is not None:
                    cursor.execute(self._sql(
                        "INSERT INTO kbs_tokens (id, session_id, issued, expires, status) "
                        "VALUES ({}, {}, {}, {}, 'affirming')"),
                        (token_id, session_id, issued, expires))
        except self._integrity_error:
            return False
        return True

    def deny_session(self, session_id: str, now: float, audit_row: dict[str, Any]) -> None:
        """Close a session as denied, with its audit row."""
        with self._tx() as db:
            db.execute(insert(audit).values(**audit_row))
            db.execute(update(sessions).where(sessions.c.id == session_id).values(
                state="denied", expires=now))

    def session_and_secret(self, session_id: str | None, path: str
                           ) -> tuple[dict[str, Any] | None, Sealed | None]:
        """A session (if an id is given) and a secret, read in one transaction."""
        with self._driver() as cursor:
            session = None
            if session_id:
                cursor.execute(self._sql(
                    f"SELECT {_SESSION_SELECT} FROM kbs_sessions WHERE id = {{}}"),
                    (session_id,))
                row = cursor.fetchone()
                session = dict(zip(_SESSION_COLUMNS, row, strict=True)) if row else None
            cursor.execute(self._sql(
                "SELECT iv, ciphertext, tag FROM kbs_secrets WHERE path = {}"), (path,))
            found = cursor.fetchone()
            return session, (Sealed(bytes(found[0]), bytes(found[1]), bytes(found[2]))
                             if found is not None else None)

    def purge(self, now: float, report_memory_seconds: float) -> int:
        """Drop expired sessions and tokens, and reports older than ``report_memory_seconds``
        (a report's nonce has expired by then, so its replay fails anyway); returns how many
        sessions went."""
        with self._tx() as db:
            gone = db.execute(delete(sessions).where(sessions.c.expires < now)).rowcount
            db.execute(delete(tokens).where(tokens.c.expires < now))
            db.execute(delete(used_reports).where(
                used_reports.c.at < now - report_memory_seconds))
            return int(gone)

    # ---- secrets, keys, documents --------------------------------------------------------
    def put_secret(self, path: str, sealed: Sealed) -> None:
        with self._tx() as db:
            db.execute(delete(secrets).where(secrets.c.path == path))
            db.execute(insert(secrets).values(path=path, iv=sealed.iv,
                                              ciphertext=sealed.ciphertext, tag=sealed.tag))

    def secret(self, path: str) -> Sealed | None:
        with self._tx() as db:
            row = db.execute(select(secrets).where(secrets.c.path == path)).first()
            return Sealed(row.iv, row.ciphertext, row.tag) if row is not None else None

    def key(self, name: str) -> Sealed | None:
        with self._tx() as db:
            row = db.execute(select(broker_keys).where(broker_keys.c.name == name)).first()
            return Sealed(row.iv, row.ciphertext, row.tag) if row is not None else None

    def add_key_once(self, name: str, sealed: Sealed) -> None:
        """Store a key unless one exists (the first worker wins)."""
        try:
            with self._tx() as db:
                db.execute(insert(broker_keys).values(name=name, iv=sealed.iv,
                                                      ciphertext=sealed.ciphertext,
                                                      tag=sealed.tag))
        except DbIntegrityError:
            pass

    def put_document(self, kind: str, doc_id: str, body: str) -> int:
        with self._tx() as db:
            row = db.execute(select(documents.c.version).where(
                documents.c.kind == kind, documents.c.id == doc_id)).first()
            version = 1 if row is None else row.version + 1
            db.execute(delete(documents).where(documents.c.kind == kind,
                                               documents.c.id == doc_id))
            db.execute(insert(documents).values(kind=kind, id=doc_id, body=body,
                                                version=version))
            return version

    # ---- audit ---------------------------------------------------------------------------
    @staticmethod
    def audit_row(action: str, outcome: str, findings: list[dict[str, str]], *,
                  session_id: str | None = None, subject: str | None = None,
                  chip_id: str | None = None, at: float | None = None) -> dict[str, Any]:
        return {"at": time.time() if at is None else at, "session_id": session_id,
                "action": action, "outcome": outcome, "subject": subject, "chip_id": chip_id,
                "findings": json.dumps(findings)}

    def log(self, action: str, outcome: str, findings: list[dict[str, str]], *,
            session_id: str | None = None, subject: str | None = None,
            chip_id: str | None = None, at: float | None = None) -> None:
        row = self.audit_row(action, outcome, findings, session_id=session_id,
                             subject=subject, chip_id=chip_id, at=at)
        with self._driver() as cursor:
            cursor.execute(self._sql(_AUDIT_INSERT), tuple(row[name] for name in _AUDIT_COLUMNS))

    def audit_log(self, limit: int = 100, after: int = 0) -> list[dict[str, Any]]:
        with self._tx() as db:
            rows = db.execute(select(audit).where(audit.c.id > after)
                              .order_by(audit.c.id).limit(limit)).mappings().all()
        return [{**dict(row), "findings": json.loads(row["findings"])} for row in rows]
