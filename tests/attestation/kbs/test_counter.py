"""The broker's rollback counters without a VM: registration, the release plaintext, the MAC'd
compare-and-set over HTTP (SQLite, and PostgreSQL when CVM_TEST_POSTGRES_URL is set), and the
SVSM's :class:`KbsCounter` against a broker on loopback whose answers the host edits."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import text

from cvm.attestation.kbs.broker import Broker, BrokerSettings, ProblemError
from cvm.attestation.kbs.counters import mac_key
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.drbg import SeededRandom
from cvm.crypto.tpm_kdf import hmac
from cvm.errors import FormatError, IntegrityError, PolicyError, StateError, UsageError
from cvm.formats.kbs.vtpm_counter import (
    AdvanceAnswer,
    AdvanceRequest,
    KeyRelease,
    answer_message,
    request_message,
)
from cvm.guest.svsm import kbs_counter
from cvm.guest.svsm.kbs_counter import KbsCounter
from cvm.host.relay import NetworkRelay

from .conftest import ADMIN_TOKEN, Clock, database_url, serving

PATH = "counter-tests/vtpm/state-key"
KEY = bytes(range(100, 132))
START = 7


@dataclass
class Counters:
    url: str
    broker: Broker

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"authorization": f"Bearer {ADMIN_TOKEN}"})

    def value(self, path: str = PATH) -> int | None:
        return self.broker.counters.value(path)

    def post(self, body: object, path: str = PATH) -> httpx.Response:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            return client.post(f"/kbs/v0/counter/{path}", content=json.dumps(body))

    def last(self, action: str = "counter") -> dict[str, object]:
        with self.admin() as client:
            rows = client.get("/kbs/v0/audit", params={"limit": 1000}).json()
        return next(row for row in reversed(rows) if row["action"] == action)

    def reset(self, value: int = START) -> None:
        with self.admin() as client:
            answer = client.put(f"/kbs/v0/counter/{PATH}", json={"value": value, "reset": True})
        assert answer.status_code == 200 and answer.json()["value"] == value


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def counters(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Counters]:
    broker = Broker(Storage(database_url(request.param, tmp_path_factory)), bytes(range(32)),
                    TrustRoots.amd(), clock=Clock(), settings=BrokerSettings())
    with broker.storage.engine.begin() as db:
        db.execute(text("DELETE FROM kbs_counters"))
    with serving(broker) as url:
        service = Counters(url, broker)
        with service.admin() as admin:
            assert admin.post(f"/kbs/v0/resource/{PATH}", content=KEY).status_code == 200
            started = admin.put(f"/kbs/v0/counter/{PATH}", json={"value": START})
        assert started.json() == {"value": START, "created": True, "kept": False}
        yield service


def _request(old: int, new: int, nonce: bytes = b"n" * 32, key: bytes = KEY,
             path: str = PATH) -> AdvanceRequest:
    return AdvanceRequest(old, new, nonce, hmac("sha256", mac_key(key),
                                                request_message(path, old, new, nonce)))


# ---- registration -----------------------------------------------------------------------------
def test_registration_keeps_a_counter_that_exists_unless_reset(counters: Counters) -> None:
    counters.reset(START)
    with counters.admin() as admin:
        again = admin.put(f"/kbs/v0/counter/{PATH}", json={"value": 1})
        assert again.json() == {"value": START, "created": False, "kept": True}
        assert counters.value() == START
        assert admin.put(f"/kbs/v0/counter/{PATH}", json={"value": 2, "reset": True}
                         ).json() == {"value": 2, "created": False, "kept": False}
        assert counters.value() == 2
        refused = [admin.put(f"/kbs/v0/counter/{PATH}", json=body).status_code for body in (
            {"value": -1}, {"value": 1 << 63}, {"value": True}, {"value": 1, "reset": 1},
            {"value": 1, "other": 0}, {})]
        assert refused == [400] * 6
        assert admin.put("/kbs/v0/counter/counter-tests/disk/x", json={"value": 1}
                         ).status_code == 404
    with httpx.Client(base_url=counters.url, timeout=30) as client:
        assert client.put(f"/kbs/v0/counter/{PATH}", json={"value": 0}).status_code == 401
    assert counters.value() == 2
    assert "reset" in str(counters.last("admin")["subject"])


# ---- advance at the broker --------------------------------------------------------------------
def test_a_genuine_advance_moves_the_counter_and_answers_under_the_key(
        counters: Counters) -> None:
    counters.reset()
    nonce = b"fresh nonce of the svsm, 32 byte"
    answer = counters.post(_request(START, START + 1, nonce).to_json())
    assert answer.status_code == 200
    parsed = AdvanceAnswer.from_json(answer.json())
    assert parsed.value == START + 1
    assert parsed.mac == hmac("sha256", mac_key(KEY), answer_message(PATH, START + 1, nonce))
    assert counters.value() == START + 1
    row = counters.last()
    assert (row["outcome"], row["subject"]) == ("advanced", f"{PATH} {START} -> {START + 1}")


def test_a_replayed_advance_is_refused(counters: Counters) -> None:
    counters.reset()
    request = _request(START, START + 1).to_json()
    assert counters.post(request).status_code == 200
    replayed = counters.post(request)
    assert replayed.status_code == 409 and replayed.json()["type"].endswith("CounterConflict")
    assert counters.value() == START + 1
    row = counters.last()
    assert row["outcome"] == "refused"
    assert row["findings"] == [{"rule": "counter.value", "expected": str(START),
                                "actual": str(START + 1), "input": "old"}]


def test_an_advance_out_of_order_or_by_more_than_one_is_refused(counters: Counters) -> None:
    counters.reset()
    ahead = counters.post(_request(START + 1, START + 2).to_json())  # sent before n -> n+1
    assert ahead.status_code == 409
    assert counters.last()["findings"][0]["rule"] == "counter.value"  # type: ignore[index]
    jump = counters.post(_request(START, START + 2).to_json())
    assert jump.status_code == 409
    assert counters.last()["findings"][0]["rule"] == "counter.step"  # type: ignore[index]
    back = counters.post(_request(START, START).to_json())
    assert back.status_code == 409
    assert counters.value() == START


def test_an_advance_by_someone_without_the_state_key_is_refused(counters: Counters) -> None:
    counters.reset()
    for forged in (_request(START, START + 1, key=bytes(32)),  # another key
                   _request(START, START + 1, path="counter-tests/vtpm/other"),  # another path
                   AdvanceRequest(START, START + 1, b"n" * 32, b"\0" * 32)):
        answer = counters.post(forged.to_json())
        assert answer.status_code == 401 and answer.json()["type"].endswith("CounterMacInvalid")
        assert counters.last()["findings"][0]["rule"] == "counter.mac"  # type: ignore[index]
    mac_of_other_values = _request(START, START + 1).mac
    answer = counters.post(AdvanceRequest(START + 1, START + 2, b"n" * 32,
                                          mac_of_other_values).to_json())
    assert answer.status_code == 401
    assert counters.value() == START


def test_racing_advances_have_exactly_one_winner(counters: Counters) -> None:
    counters.reset()
    statuses: list[int] = []
    requests = [_request(START, START + 1, bytes([i]) * 32).to_json() for i in range(6)]
    threads = [threading.Thread(target=lambda r=r: statuses.append(counters.post(r).status_code))
               for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [409] * 5
    assert counters.value() == START + 1


def test_what_the_counter_route_refuses(counters: Counters) -> None:
    counters.reset()
    good = _request(START, START + 1).to_json()
    bodies: list[object] = [
        {**good, "old": -1}, {**good, "new": 1 << 63}, {**good, "nonce": "c2hvcnQ"},
        {**good, "nonce": "A" * 200}, {**good, "mac": "AAAA"}, {**good, "old": "7"},
        {**good, "extra": 1}, {"old": 1}, [good], "not json"]
    statuses = [counters.post(body).status_code for body in bodies]
    assert statuses == [400] * len(bodies)
    assert counters.post(good, "counter-tests/vtpm/nothing").status_code == 404
    other_type = counters.post(good, "counter-tests/disk/state-key")
    assert other_type.status_code == 404 and other_type.json()["type"].endswith(
        "/CounterNotFound")
    assert counters.value() == START


# ---- the release ------------------------------------------------------------------------------
def test_the_release_carries_key_counter_and_path(counters: Counters) -> None:
    counters.reset(START + 3)
    plaintext = counters.broker.counters.release(PATH, KEY, 0.0, "test")
    assert KeyRelease.from_bytes(plaintext) == KeyRelease(KEY, START + 3, PATH)
    assert plaintext[:8] == b"CVMKBSVK" and plaintext[8:16] == (START + 3).to_bytes(8, "little")


def test_a_state_key_without_a_counter_is_not_released(counters: Counters) -> None:
    with pytest.raises(ProblemError) as refused:
        counters.broker.counters.release("counter-tests/vtpm/no-counter", KEY, 0.0, "test")
    assert (refused.value.status, refused.value.kind) == (404, "CounterNotFound")
    row = counters.last("resource")
    assert row["outcome"] == "refused"
    assert row["findings"][0]["rule"] == "counter"  # type: ignore[index]


def test_the_release_layout_refuses_what_it_is_not() -> None:
    good = KeyRelease(KEY, 3, PATH).to_bytes()
    for bad in (good[:-1], good + b"x", b"CVMKBSVX" + good[8:], good[:0x20],
                good[:0x32] + "é".encode("latin-1") * len(PATH)):
        with pytest.raises(FormatError):
            KeyRelease.from_bytes(bad)
    with pytest.raises(FormatError):
        KeyRelease(KEY[:31], 0, PATH).to_bytes()
    with pytest.raises(FormatError):
        KeyRelease(KEY, 0, "x" * 401).to_bytes()
    assert KeyRelease.from_bytes(KeyRelease(KEY, 0, "x" * 400).to_bytes()).path == "x" * 400
    assert KeyRelease.from_bytes(KeyRelease(KEY, 9, "").to_bytes()) == KeyRelease(KEY, 9, "")


# ---- the SVSM's counter, its traffic through a host that edits it ------------------------------
Edit = Callable[[bytes, bytes], bytes]


def _svsm_counter(counters: Counters, edit: Edit | None = None,
                  key: bytes = KEY) -> tuple[KbsCounter, list[bytes]]:
    relay = NetworkRelay(counters.url)

    def exchange(request: bytes) -> bytes:
        answer = relay.exchange(request)
        return edit(request, answer) if edit is not None else answer

    counter = KbsCounter(counters.url, exchange, PATH)
    counter.released(START, lambda: key, SeededRandom(b"svsm"))
    return counter, relay.transcript


def test_the_svsm_counter_advances_at_the_broker(counters: Counters) -> None:
    counters.reset()
    counter, transcript = _svsm_counter(counters)
    assert counter.read() == START
    counter.advance(START)  # where it is: nothing sent
    assert transcript == []
    counter.advance(START + 1)
    assert counter.read() == START + 1 == counters.value()
    assert len(transcript) == 2 and transcript[0].startswith(f"POST /kbs/v0/counter/{PATH} "
                                                             .encode())
    assert KEY not in b"".join(transcript) and mac_key(KEY) not in b"".join(transcript)


def test_the_svsm_counter_moves_by_one_and_only_after_release(counters: Counters) -> None:
    counter, transcript = _svsm_counter(counters)
    with pytest.raises(PolicyError, match="moves by one"):
        counter.advance(START + 2)
    with pytest.raises(PolicyError, match="moves by one"):
        counter.advance(START - 1)
    assert transcript == [] and counter.read() == START
    with pytest.raises(StateError):
        KbsCounter(counters.url, NetworkRelay(counters.url).exchange, PATH).read()


def _http(document: object) -> bytes:
    body = json.dumps(document).encode()
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(body)) + body


def _replace_mac(answer: bytes, mac: bytes) -> bytes:
    document = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    document["mac"] = AdvanceAnswer(0, mac).to_json()["mac"]
    return _http(document)


def test_a_forged_advance_answer_is_refused(counters: Counters) -> None:
    counters.reset()
    counter, _ = _svsm_counter(counters, lambda _, answer: _replace_mac(answer, b"\x5a" * 32))
    with pytest.raises(IntegrityError, match="does not authenticate"):
        counter.advance(START + 1)
    assert counter.read() == START  # the save did not count (the broker did move)
    assert counters.value() == START + 1


def test_an_earlier_advance_answer_replayed_is_refused(counters: Counters) -> None:
    counters.reset()
    first, transcript = _svsm_counter(counters)
    first.advance(START + 1)
    old_answer = transcript[1]
    counters.reset()
    counter, _ = _svsm_counter(counters, lambda _, __: old_answer)  # the host's copy
    counter._random = SeededRandom(b"another boot")
    with pytest.raises(IntegrityError, match="does not authenticate"):
        counter.advance(START + 1)
    assert counter.read() == START


def test_an_answer_with_another_value_is_refused(counters: Counters) -> None:
    """Even MAC'd by the state key's holder, an answer naming another value is no commit."""
    counters.reset()

    def other_value(request: bytes, _: bytes) -> bytes:
        sent = AdvanceRequest.from_json(json.loads(request.split(b"\r\n\r\n", 1)[1]))
        mac = hmac("sha256", mac_key(KEY), answer_message(PATH, START + 5, sent.nonce))
        return _http(AdvanceAnswer(START + 5, mac).to_json())

    counter, _ = _svsm_counter(counters, other_value)
    with pytest.raises(IntegrityError, match=f"says {START + 5}"):
        counter.advance(START + 1)
    assert counter.read() == START


def test_a_dropped_or_refused_advance_is_a_failed_save(counters: Counters) -> None:
    counters.reset()
    dropped, _ = _svsm_counter(counters, lambda _, __: b"")
    with pytest.raises(FormatError, match="without an answer"):
        dropped.advance(START + 1)
    assert dropped.read() == START
    counters.reset(START + 1)  # the broker is elsewhere: 409
    behind, _ = _svsm_counter(counters)
    with pytest.raises(PolicyError, match="409 CounterConflict"):
        behind.advance(START + 1)
    assert behind.read() == START
    other_key, _ = _svsm_counter(counters, key=bytes(32))
    counters.reset()
    with pytest.raises(PolicyError, match="401 CounterMacInvalid"):
        other_key.advance(START + 1)
    missing = KbsCounter(counters.url, NetworkRelay(counters.url).exchange,
                         "counter-tests/vtpm/absent")
    missing.released(START, lambda: KEY, SeededRandom(b"x"))
    with pytest.raises(UsageError, match="404"):
        missing.advance(START + 1)
    assert counters.value() == START


def test_the_mac_keys_agree_and_are_not_the_state_key() -> None:
    assert kbs_counter.mac_key(KEY) == mac_key(KEY) != KEY
    assert len(mac_key(KEY)) == 32 and mac_key(bytes(32)) != mac_key(KEY)
    assert request_message(PATH, 1, 2, b"n") != answer_message(PATH, 2, b"n")


# ---- the exact bytes, the bounds, the audit rows ----------------------------------------------
def test_the_mac_messages_are_the_documented_bytes() -> None:
    assert request_message("r/vtpm/t", 1, 2, b"NN") == (
        b"\x22\x00cvm kbs counter advance request v1" + b"\x08\x00r/vtpm/t"
        + b"\x01\0\0\0\0\0\0\0" + b"\x02\0\0\0\0\0\0\0" + b"\x02\x00NN")
    assert answer_message("r/vtpm/t", 2, b"NN") == (
        b"\x21\x00cvm kbs counter advance answer v1" + b"\x08\x00r/vtpm/t"
        + b"\x02\0\0\0\0\0\0\0" + b"\x02\x00NN")


def test_the_advance_documents_bounds() -> None:
    top = (1 << 63) - 1
    request = AdvanceRequest(0, top, b"n" * 16, b"m" * 32)
    assert AdvanceRequest.from_json(request.to_json()) == request
    longest = AdvanceRequest(0, 1, b"n" * 64, b"m" * 32)
    assert AdvanceRequest.from_json(longest.to_json()) == longest
    assert AdvanceAnswer.from_json(AdvanceAnswer(0, b"m" * 32).to_json()).value == 0
    assert AdvanceAnswer.from_json(AdvanceAnswer(top, b"m" * 32).to_json()).value == top
    for bad, where in (({"old": top + 1}, "advance.old"), ({"new": -1}, "advance.new"),
                       ({"nonce": "bg" * 10}, "advance.nonce"),  # 15 bytes
                       ({"nonce": AdvanceRequest(0, 1, b"n" * 65, b"").to_json()["nonce"]},
                        "advance.nonce"),
                       ({"mac": "bQ" * 21}, "advance.mac")):
        with pytest.raises(FormatError, match=where.replace(".", r"\.")):
            AdvanceRequest.from_json({**request.to_json(), **bad})
    for bad, where in (({"value": top + 1}, "answer.value"), ({"mac": "bQ"}, "answer.mac"),
                       ({"extra": 1}, "answer")):
        with pytest.raises(FormatError, match=where.replace(".", r"\.")):
            AdvanceAnswer.from_json({**AdvanceAnswer(1, b"m" * 32).to_json(), **bad})


def test_registration_bounds_and_its_audit_rows(counters: Counters) -> None:
    top = (1 << 63) - 1
    path = "counter-tests/vtpm/bounds"
    with counters.admin() as admin:
        assert admin.put(f"/kbs/v0/counter/{path}", json={"value": top}).json()["value"] == top
        assert counters.last("admin")["subject"] == f"{path} = {top} (created)"
        assert admin.put(f"/kbs/v0/counter/{path}", json={"value": 0}).json()["kept"]
        assert counters.last("admin")["subject"] == f"{path} = {top} (kept)"
        assert admin.put(f"/kbs/v0/counter/{path}", json={"value": 0, "reset": True}
                         ).json()["value"] == 0
        assert counters.last("admin")["subject"] == f"{path} = 0 (reset)"
        refused = admin.put("/kbs/v0/counter/counter-tests/disk/x", json={"value": 1})
        assert refused.json()["type"].endswith("/CounterNotFound")
    assert counters.value(path) == 0


def test_refusals_are_logged_with_subject_time_and_findings(counters: Counters) -> None:
    counters.reset()
    clock = counters.broker.clock
    assert isinstance(clock, Clock)
    clock.offset = 1e11  # the broker's clock, not the wall clock, dates the rows
    try:
        assert counters.post(_request(START, START + 1, key=bytes(32)).to_json()
                             ).status_code == 401
        mac = counters.last()
        assert mac["findings"] == [{"rule": "counter.mac", "expected": "an HMAC under the "
                                    "state key's counter key", "actual": "a MAC that does not "
                                    "verify", "input": "mac"}]
        assert mac["subject"] == f"{PATH} {START} -> {START + 1}"
        assert float(str(mac["at"])) > 1e11
        jump = counters.post(_request(START, START + 3).to_json())
        assert jump.json()["type"].endswith("/CounterConflict")
        step = counters.last()
        assert step["findings"] == [{"rule": "counter.step", "expected": str(START + 1),
                                     "actual": str(START + 3), "input": "new"}]
        assert step["subject"] == f"{PATH} {START} -> {START + 3}"
        assert float(str(step["at"])) > 1e11
        missing = counters.post(_request(1, 2, path="counter-tests/vtpm/none").to_json(),
                                "counter-tests/vtpm/none")
        assert missing.json()["type"].endswith("/CounterNotFound")
        row = counters.last()
        assert row["findings"] == [{"rule": "counter", "expected": "a registered state key",
                                    "actual": "none", "input": "path"}]
        assert row["subject"] == "counter-tests/vtpm/none 1 -> 2"
        assert float(str(row["at"])) > 1e11
        assert counters.post(_request(START, START + 1).to_json()).status_code == 200
        advanced = counters.last()
        replayed = counters.post(_request(START, START + 1).to_json())
        assert replayed.json()["detail"] == f"the counter is not at {START}"
        conflict = counters.last()
        assert conflict["subject"] == f"{PATH} {START} -> {START + 1}"
        assert float(str(conflict["at"])) > 1e11
        assert advanced["findings"] == [] and float(str(advanced["at"])) > 1e11
        with pytest.raises(ProblemError):
            counters.broker.counters.release("counter-tests/vtpm/no-counter", KEY, 1e9 + 5,
                                             "session s")
        with counters.admin() as admin:
            admin.put(f"/kbs/v0/counter/{PATH}", json={"value": START})
        registered = counters.last("admin")
        assert registered["findings"] == [] and float(str(registered["at"])) > 1e11
        released = counters.last("resource")
        assert released["subject"] == "counter-tests/vtpm/no-counter (session s)"
        assert released["at"] == 1e9 + 5
        assert released["findings"] == [{"rule": "counter", "expected": "a rollback counter "
                                         "registered with the state key", "actual": "none",
                                         "input": "kbs_counters"}]
    finally:
        clock.offset = 0.0


def test_the_svsm_counters_refusal_names_the_step() -> None:
    counter = KbsCounter("http://127.0.0.1:1", lambda _: b"", PATH)
    counter.released(3, lambda: KEY, SeededRandom(b"x"))
    with pytest.raises(PolicyError) as refused:
        counter.advance(5)
    assert [(f.claim, f.expected, f.actual) for f in refused.value.findings] == [
        ("counter", "4", "5")]


def test_the_openapi_document_declares_the_counter_bodies(counters: Counters) -> None:
    with httpx.Client(base_url=counters.url, timeout=30) as client:
        document = client.get("/openapi.json").json()
    route = document["paths"]["/kbs/v0/counter/{repository}/{kind}/{tag}"]
    b64url = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}
    assert route["post"]["requestBody"] == {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "required": ["old", "new", "nonce", "mac"], "properties": {
            "old": {"type": "integer", "minimum": 0}, "new": {"type": "integer", "minimum": 0},
            "nonce": b64url, "mac": b64url}}}}}
    assert route["put"]["requestBody"]["content"]["application/json"]["schema"] == {
        "type": "object", "required": ["value"], "properties": {
            "value": {"type": "integer", "minimum": 0}, "reset": {"type": "boolean"}}}
    assert set(route["post"]["responses"]) >= {"200", "400", "401", "404", "409"}


def test_a_refusal_without_a_problem_type_is_still_a_refusal(counters: Counters) -> None:
    """The host answers the advance with a bare 409 ``{}``: a failed save, named as such."""
    counters.reset()
    head = b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
    counter, _ = _svsm_counter(counters, lambda _, __: head + b"connection: close\r\n\r\n{}")
    with pytest.raises(PolicyError) as refused:
        counter.advance(START + 1)
    assert f"{START} -> {START + 1} (409 ): the state was not saved" in str(refused.value)
    assert counter.read() == START
