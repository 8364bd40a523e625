"""The vTPM key release and the counter's advance documents: the release's bytes built by hand,
and every refusal by its whole message, naming the field (and the document) that is wrong."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cvm.errors import FormatError
from cvm.formats.kbs.json_fields import b64url_encode
from cvm.formats.kbs.vtpm_counter import AdvanceAnswer, AdvanceRequest, KeyRelease

KEY = bytes(range(32))
PATH = "repo/vtpm/tag"


def _refused(message: str) -> pytest.RaisesContext[FormatError]:
    return pytest.raises(FormatError, match=f"^{re.escape(message)}$")


def test_the_release_is_the_documented_bytes() -> None:
    built = (b"CVMKBSVK" + (0x0102030405060708).to_bytes(8, "little") + KEY
             + len(PATH).to_bytes(2, "little") + PATH.encode())
    assert KeyRelease(KEY, 0x0102030405060708, PATH).to_bytes() == built
    assert KeyRelease.from_bytes(built) == KeyRelease(KEY, 0x0102030405060708, PATH)


def test_each_refused_release_is_named() -> None:
    good = KeyRelease(KEY, 3, PATH).to_bytes()
    for bad in (good[:0x31], b"CVMKBSVX" + good[8:], b""):
        with _refused("the released vTPM key is not a cvm key release (bad magic or "
                      "truncated)"):
            KeyRelease.from_bytes(bad)
    with _refused(f"the released vTPM key's path is {len(PATH) - 1} bytes, its header says "
                  f"{len(PATH)}"):
        KeyRelease.from_bytes(good[:-1])
    with _refused(f"the released vTPM key's path is {len(PATH) + 2} bytes, its header says "
                  f"{len(PATH)}"):
        KeyRelease.from_bytes(good + b"xy")
    with _refused("the released vTPM key's path is not ASCII"):
        KeyRelease.from_bytes(good[:-1] + b"\xe9")
    with _refused("a vTPM state key is 32 bytes, not 33"):
        KeyRelease(KEY + b"k", 0, PATH).to_bytes()
    with _refused("resource path longer than 400 bytes"):
        KeyRelease(KEY, 0, "p" * 401).to_bytes()


def test_a_path_that_is_not_ascii_is_refused_when_built() -> None:
    """Whatever the caller passes, building a release raises the format error, no other."""
    for path in ("repo/vtpm/caf\u00e9", "\u2603", "repo/vtpm/\udc80"):
        with _refused("the resource path is not ASCII"):
            KeyRelease(KEY, 0, path).to_bytes()


def _request(**changes: Any) -> dict[str, Any]:
    return {**AdvanceRequest(1, 2, b"n" * 32, b"m" * 32).to_json(), **changes}


def _answer(**changes: Any) -> dict[str, Any]:
    return {**AdvanceAnswer(2, b"m" * 32).to_json(), **changes}


@pytest.mark.parametrize(("changes", "message"), [
    ({"old": "1"}, "advance.old: expected an integer"),
    ({"new": True}, "advance.new: expected an integer"),
    ({"new": 1 << 63}, f"advance.new: {1 << 63} is not between 0 and {(1 << 63) - 1}"),
    ({"old": -1}, f"advance.old: -1 is not between 0 and {(1 << 63) - 1}"),
    ({"nonce": "n" * 129}, "advance.nonce: expected a base64url string"),
    ({"nonce": "n*"}, "advance.nonce: not base64url"),
    ({"nonce": b64url_encode(b"n" * 96)}, "advance.nonce: 96 bytes, expected 16 to 64"),
    ({"nonce": b64url_encode(b"n" * 15)}, "advance.nonce: 15 bytes, expected 16 to 64"),
    ({"mac": "m" * 65}, "advance.mac: expected a base64url string"),
    ({"mac": b64url_encode(b"m" * 48)}, "advance.mac: 48 bytes, expected 32"),
    ({"mac": 7}, "advance.mac: expected a base64url string"),
    ({"extra": 1}, "advance: unknown field extra"),
])
def test_each_refused_advance_request_is_named(changes: dict[str, Any], message: str) -> None:
    with _refused(message):
        AdvanceRequest.from_json(_request(**changes))


def test_a_request_without_a_field_is_named() -> None:
    document = _request()
    del document["new"]
    with _refused("advance: missing new"):
        AdvanceRequest.from_json(document)


@pytest.mark.parametrize(("changes", "message"), [
    ({"value": 2.0}, "answer.value: expected an integer"),
    ({"mac": "m" * 65}, "answer.mac: expected a base64url string"),
    ({"mac": b64url_encode(b"m" * 31)}, "answer.mac: 31 bytes, expected 32"),
    ({"extra": 1}, "answer: unknown field extra"),
])
def test_each_refused_advance_answer_is_named(changes: dict[str, Any], message: str) -> None:
    with _refused(message):
        AdvanceAnswer.from_json(_answer(**changes))
