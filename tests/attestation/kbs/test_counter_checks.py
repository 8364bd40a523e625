"""The broker's rollback counters, each check on its own broker (a fresh SQLite database per
test, no server): what mutation testing of ``kbs/counters.py`` found unpinned — the release's
refusal text, the route's OpenAPI bodies, the table made on a database that has none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from cvm.attestation.kbs import counters as counters_module
from cvm.attestation.kbs.app import create_app
from cvm.attestation.kbs.broker import Broker, BrokerSettings, ProblemError
from cvm.attestation.kbs.counters import CounterStore, mac_key, register
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.tpm_kdf import hmac
from cvm.errors import FormatError
from cvm.formats.kbs.vtpm_counter import AdvanceRequest, request_message

from .units import ADMIN_TOKEN, request

PATH = "checks/vtpm/state-key"
KEY = bytes(range(40, 72))


@pytest.fixture
def broker(tmp_path: Path) -> Broker:
    made = Broker(Storage(f"sqlite:///{tmp_path / 'kbs.db'}"), bytes(range(32)),
                  TrustRoots.amd(), clock=lambda: 1e9, settings=BrokerSettings())
    made.set_secret(PATH, KEY)
    return made


def _advance(old: int, new: int, key: bytes = KEY) -> bytes:
    nonce = b"n" * 32
    mac = hmac("sha256", mac_key(key), request_message(PATH, old, new, nonce))
    return json.dumps(AdvanceRequest(old, new, nonce, mac).to_json()).encode()


def test_a_new_database_gets_the_counter_table(tmp_path: Path) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'fresh.db'}")
    CounterStore(storage)
    assert "kbs_counters" in inspect(storage.engine).get_table_names()


def test_a_state_key_without_a_counter_is_refused_with_what_to_do(broker: Broker) -> None:
    with pytest.raises(ProblemError) as refused:
        broker.counters.release(PATH, KEY, 1e9, "session s")
    assert (refused.value.status, refused.value.kind) == (404, "CounterNotFound")
    assert refused.value.detail == (f"resource {PATH} has no rollback counter: register the "
                                    "image again")


def test_the_counter_routes_declare_their_required_json_bodies(broker: Broker) -> None:
    document = request(create_app(broker, ADMIN_TOKEN), "GET", "/openapi.json").json()
    route = document["paths"]["/kbs/v0/counter/{repository}/{kind}/{tag}"]
    for method, required in (("post", ["old", "new", "nonce", "mac"]), ("put", ["value"])):
        body = route[method]["requestBody"]
        assert body["required"] is True
        assert list(body["content"]) == ["application/json"]
        assert body["content"]["application/json"]["schema"]["required"] == required


def test_an_advance_is_refused_with_a_detail_naming_why(broker: Broker) -> None:
    """Each refusal of ``POST /kbs/v0/counter/...``: status, kind, and the detail the SVSM's
    log shows."""
    broker.counters.register(PATH, b'{"value": 3}', 1e9)
    cases = (
        ("checks/disk/key", KEY, _advance(3, 4), 404, "CounterNotFound",
         "counters belong to <repository>/vtpm/<tag>"),
        ("checks/vtpm/none", None, _advance(3, 4), 404, "CounterNotFound",
         "resource checks/vtpm/none does not exist"),
        (PATH, KEY, _advance(3, 4, key=bytes(32)), 401, "CounterMacInvalid",
         "the advance request is not authenticated by the state key"),
        (PATH, KEY, _advance(3, 5), 409, "CounterConflict", "a counter advances by one"),
        (PATH, KEY, _advance(2, 3), 409, "CounterConflict", "the counter is not at 2"),
    )
    for path, key, body, status, kind, detail in cases:
        with pytest.raises(ProblemError) as refused:
            broker.counters.advance(path, key, body, 1e9)
        assert (refused.value.status, refused.value.kind, refused.value.detail) == (
            status, kind, detail)
    assert broker.counters.value(PATH) == 3


def test_a_malformed_advance_body_is_named_as_the_advance(broker: Broker) -> None:
    with pytest.raises(FormatError, match=r"^advance: expected a JSON object, got list$"):
        broker.counters.advance(PATH, KEY, b"[]", 1e9)
    with pytest.raises(FormatError, match=r"^advance: not JSON"):
        broker.counters.advance(PATH, KEY, b"{", 1e9)


def test_a_malformed_registration_names_its_field(broker: Broker) -> None:
    """The admin's ``PUT`` body: each refusal names the field (the 400's detail)."""
    for body, message in (
            (b"[]", "counter: expected a JSON object, got list"),
            (b"{}", "counter: missing value"),
            (b'{"value": 1, "other": 2}', "counter: unknown field other"),
            (b'{"value": -1}', "counter.value: expected an integer from 0 to "
             f"{(1 << 63) - 1}"),
            (b'{"value": 1, "reset": 1}', "counter.reset: expected true or false")):
        with pytest.raises(FormatError) as refused:
            broker.counters.register(PATH, body, 1e9)
        assert str(refused.value) == message
    assert broker.counters.value(PATH) is None


def test_registration_is_audited_as_the_admins_counter_action(broker: Broker) -> None:
    broker.counters.register(PATH, b'{"value": 5}', 1e9)
    row = broker.storage.audit_log(10)[-1]
    assert (row["action"], row["outcome"], row["subject"]) == (
        "admin", "counter", f"{PATH} = 5 (created)")


def test_registration_outside_the_vtpm_type_is_refused(broker: Broker) -> None:
    with pytest.raises(ProblemError) as refused:
        register(broker, "checks/disk/key", b'{"value": 1}')
    assert (refused.value.status, refused.value.kind, refused.value.detail) == (
        404, "CounterNotFound", "counters belong to <repository>/vtpm/<tag>")


def test_a_worker_that_loses_the_race_to_create_the_table_creates_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers starting at once: the loser's CREATE fails on the catalogue's constraint
    (PostgreSQL), and it asks again on the same database (where the table now exists)."""
    storage = Storage(f"sqlite:///{tmp_path / 'race.db'}")
    create_all = counters_module.counter_metadata.create_all
    binds: list[object] = []

    def racing(bind: Any, **options: Any) -> None:
        binds.append(bind)
        if len(binds) == 1:
            raise DbIntegrityError("CREATE TABLE kbs_counters", None, Exception("duplicate"))
        create_all(bind, **options)

    monkeypatch.setattr(counters_module.counter_metadata, "create_all", racing)
    CounterStore(storage)
    assert binds == [storage.engine, storage.engine]
    assert "kbs_counters" in inspect(storage.engine).get_table_names()
