"""The vTPM state's rollback counters, held by the broker (docs/kbs.md, "The rollback counter in
the broker"; the messages: :mod:`cvm.formats.kbs.vtpm_counter`).

One row per state-key resource (``<repository>/vtpm/<tag>``) in ``kbs_counters``, in the shared
database (SQLite or PostgreSQL), so every worker sees one value:

* **read**: a launch attestation's release of the state key carries the counter inside the JWE
  (:meth:`CounterStore.release`), so only the state key's holder can have written it, and only
  this boot's TEE key opens it. A state key without a counter is not released.
* **advance**: ``POST /kbs/v0/counter/<repository>/vtpm/<tag>`` (:meth:`CounterStore.advance`):
  the request's MAC under the state-key-derived key is checked first (a requester without the
  state key moves nothing), then ``new = old + 1``, then a compare-and-set ``old -> new`` in one
  transaction with its audit row — exactly one request per value wins; a replayed, reordered or
  raced one gets 409. The answer's MAC covers the new value and the SVSM's nonce.
* **registration**: ``PUT`` on the same path (admin) starts the counter at the image's sealed
  state counter; a counter that exists is kept unless the body says ``"reset": true``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy import BigInteger, Column, Float, MetaData, String, Table
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from cvm.attestation.kbs.broker import Broker, ProblemError, resource_path
from cvm.attestation.kbs.launch import LAUNCH_RESOURCE_TYPE
from cvm.attestation.kbs.storage import _AUDIT_COLUMNS, _AUDIT_INSERT, Storage
from cvm.crypto.tpm_kdf import hmac, kdfa, verify_hmac
from cvm.errors import FormatError, IntegrityError
from cvm.formats.kbs.json_fields import load_object, only_keys
from cvm.formats.kbs.vtpm_counter import (
    MAC_KEY_LABEL,
    MAX_COUNTER,
    AdvanceAnswer,
    AdvanceRequest,
    KeyRelease,
    answer_message,
    request_message,
)

counter_metadata = MetaData()
counters = Table(
    "kbs_counters", counter_metadata,
    Column("path", String(400), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Column("updated", Float, nullable=False),
)
COUNTER_ROUTE = "/kbs/v0/counter/{repository}/{kind}/{tag}"
_B64URL = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}
_ADVANCE_SCHEMA = {"type": "object", "required": ["old", "new", "nonce", "mac"], "properties": {
    "old": {"type": "integer", "minimum": 0}, "new": {"type": "integer", "minimum": 0},
    "nonce": _B64URL, "mac": _B64URL}}
_REGISTER_SCHEMA = {"type": "object", "required": ["value"], "properties": {
    "value": {"type": "integer", "minimum": 0}, "reset": {"type": "boolean"}}}


def mac_key(state_key: bytes) -> bytes:
    """The HMAC key of a state key's counter messages (never the state key itself)."""
    return kdfa("sha256", state_key, MAC_KEY_LABEL, b"", b"", bits=256)


def _finding(rule: str, expected: str, actual: str, where: str) -> list[dict[str, str]]:
    return [{"rule": rule, "expected": expected, "actual": actual, "input": where}]


class CounterStore:
    """The counters on the broker's storage (the table is created if missing)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        try:
            counter_metadata.create_all(storage.engine)
        except DbIntegrityError:  # another worker created it at the same moment
            counter_metadata.create_all(storage.engine)

    def value(self, path: str) -> int | None:
        with self.storage._driver() as cursor:
            cursor.execute(self.storage._sql(
                "SELECT value FROM kbs_counters WHERE path = {}"), (path,))
            row = cursor.fetchone()
            return None if row is None else int(row[0])

    def release(self, path: str, key: bytes, now: float, who: str) -> bytes:
        """The JWE plaintext releasing the state key at ``path``: key, counter, path."""
        value = self.value(path)
        if value is None:
            self.storage.log("resource", "refused", _finding(
                "counter", "a rollback counter registered with the state key", "none",
                "kbs_counters"), subject=f"{path} ({who})", at=now)
            raise ProblemError(404, "CounterNotFound", f"resource {path} has no rollback "
                                 "counter: register the image again")
        return KeyRelease(key, value, path).to_bytes()

    def advance(self, path: str, state_key: bytes | None, body: bytes, now: float
                ) -> dict[str, Any]:
        """Check an advance request and compare-and-set the counter; the MAC'd answer."""
        if path.split("/")[1] != LAUNCH_RESOURCE_TYPE:
            raise ProblemError(404, "CounterNotFound",
                                 f"counters belong to <repository>/{LAUNCH_RESOURCE_TYPE}/<tag>")
        request = AdvanceRequest.from_json(load_object(body, "advance"))
        subject = f"{path} {request.old} -> {request.new}"
        if state_key is None:
            raise self._refuse(404, "CounterNotFound", f"resource {path} does not exist", now,
                               subject, _finding("counter", "a registered state key", "none",
                                                 "path"))
        key = mac_key(state_key)
        try:
            verify_hmac("sha256", key, request.mac,
                        request_message(path, request.old, request.new, request.nonce))
        except IntegrityError:
            raise self._refuse(401, "CounterMacInvalid", "the advance request is not "
                               "authenticated by the state key", now, subject, _finding(
                                   "counter.mac", "an HMAC under the state key's counter key",
                                   "a MAC that does not verify", "mac")) from None
        if request.new != request.old + 1:
            raise self._refuse(409, "CounterConflict", "a counter advances by one", now,
                               subject, _finding("counter.step", str(request.old + 1),
                                                 str(request.new), "new"))
        if not self._compare_and_set(path, request.old, request.new, now, subject):
            current = self.value(path)
            raise self._refuse(409, "CounterConflict", f"the counter is not at {request.old}",
                               now, subject, _finding("counter.value", str(request.old),
                                                      str(current), "old"))
        answer = hmac("sha256", key, answer_message(path, request.new, request.nonce))
        return AdvanceAnswer(request.new, answer).to_json()

    def _compare_and_set(self, path: str, old: int, new: int, now: float, subject: str
                         ) -> bool:
        """``old -> new`` and its audit row in one transaction; False if the value was not
        ``old`` (another request won, or it never was)."""
        row = self.storage.audit_row("counter", "advanced", [], subject=subject, at=now)
        with self.storage._driver() as cursor:
            cursor.execute(self.storage._sql(
                "UPDATE kbs_counters SET value = {}, updated = {} WHERE path = {} AND value = {}"),
                (new, now, path, old))
            if cursor.rowcount != 1:
                return False
            cursor.execute(self.storage._sql(_AUDIT_INSERT),
                           tuple(row[name] for name in _AUDIT_COLUMNS))
        return True

    def _refuse(self, status: int, kind: str, detail: str, now: float, subject: str,
                findings: list[dict[str, str]]) -> ProblemError:
        self.storage.log("counter", "refused", findings, subject=subject, at=now)
        return ProblemError(status, kind, detail)

    def register(self, path: str, body: bytes, now: float) -> dict[str, Any]:
        """Admin: start the counter at ``path`` (kept if it exists, unless ``reset``)."""
        document = load_object(body, "counter")
        only_keys(document, "counter", {"value"}, {"reset"})
        value = document["value"]
        reset = document.get("reset", False)
        if (not isinstance(value, int) or isinstance(value, bool)
                or not 0 <= value <= MAX_COUNTER):
            raise FormatError(f"counter.value: expected an integer from 0 to {MAX_COUNTER}")
        if not isinstance(reset, bool):
            raise FormatError("counter.reset: expected true or false")
        with self.storage._driver() as cursor:
            cursor.execute(self.storage._sql(
                "SELECT value FROM kbs_counters WHERE path = {}"), (path,))
            found = cursor.fetchone()
            if found is None:
                cursor.execute(self.storage._sql(
                    "INSERT INTO kbs_counters (path, value, updated) VALUES ({}, {}, {})"),
                    (path, value, now))
            elif reset:
                cursor.execute(self.storage._sql(
                    "UPDATE kbs_counters SET value = {}, updated = {} WHERE path = {}"),
                    (value, now, path))
        created, kept = found is None, found is not None and not reset
        current = int(found[0]) if kept and found is not None else value
        self.storage.log("admin", "counter", [], subject=f"{path} = {current} ("
                         f"{'created' if created else 'kept' if kept else 'reset'})", at=now)
        return {"value": current, "created": created, "kept": kept}



def advance(broker: Broker, path: str, body: bytes) -> dict[str, Any]:
    """``POST /kbs/v0/counter/...`` for ``broker``: the state key opened from its store."""
    sealed = broker.storage.secret(path)
    key = broker._open(f"secret:{path}", sealed) if sealed is not None else None
    return broker.counters.advance(path, key, body, broker.clock())


def register(broker: Broker, path: str, body: bytes) -> dict[str, Any]:
    """``PUT /kbs/v0/counter/...`` (admin) for ``broker``."""
    if path.split("/")[1] != LAUNCH_RESOURCE_TYPE:
        raise ProblemError(404, "CounterNotFound",
                           f"counters belong to <repository>/{LAUNCH_RESOURCE_TYPE}/<tag>")
    return broker.counters.register(path, body, broker.clock())


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


def add_routes(app: FastAPI, broker: Broker, admin: Callable[[str | None], None]) -> None:
    """The counter's two routes on the broker's app (``admin`` checks the admin token)."""

    @app.post(COUNTER_ROUTE, openapi_extra=_body(_ADVANCE_SCHEMA),
              responses={400: {}, 401: {}, 404: {}, 409: {}})
    async def advance_counter(repository: str, kind: str, tag: str,
                              request: Request) -> JSONResponse:
        path = resource_path(repository, kind, tag)
        return JSONResponse(advance(broker, path, await request.body()))

    @app.put(COUNTER_ROUTE, openapi_extra=_body(_REGISTER_SCHEMA),
             responses={400: {}, 401: {}, 404: {}})
    async def register_counter(repository: str, kind: str, tag: str, request: Request,
                               authorization: Annotated[str | None, Header()] = None
                               ) -> JSONResponse:
        admin(authorization)
        path = resource_path(repository, kind, tag)
        return JSONResponse(register(broker, path, await request.body()))
