"""The SVSM's rollback counter at the key broker: the exact refusals the user reads (the
broker's own side is in test_counter.py)."""

from __future__ import annotations

import json

import pytest

from cvm.crypto.drbg import SeededRandom
from cvm.errors import IntegrityError, StateError
from cvm.formats.kbs.json_fields import b64url_encode
from cvm.guest.svsm.kbs_counter import KbsCounter

PATH = "default/vtpm/state-key"
KEY = bytes(range(32))


def _answer(document: dict[str, object]) -> bytes:
    body = json.dumps(document).encode()
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode() + body)


def test_a_counter_not_yet_released_cannot_be_read() -> None:
    counter = KbsCounter("http://127.0.0.1:1", lambda _: b"", PATH)
    with pytest.raises(StateError,
                       match=r"^the key broker has released no rollback counter yet$"):
        counter.read()


def test_an_answer_under_another_key_is_refused_and_the_counter_stays() -> None:
    sent: list[bytes] = []

    def exchange(request: bytes) -> bytes:
        sent.append(request)
        return _answer({"value": 4, "mac": b64url_encode(b"\x5a" * 32)})

    counter = KbsCounter("http://127.0.0.1:1", exchange, PATH)
    counter.released(3, lambda: KEY, SeededRandom(b"x"))
    with pytest.raises(IntegrityError, match=(
            r"^the key broker's answer to the counter advance does not authenticate "
            r"\(forged or replayed\): the state was not saved$")):
        counter.advance(4)
    assert counter.read() == 3 and len(sent) == 1
