"""The key broker's base64url fields: JOSE's alphabet, no padding, nothing else."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.formats.kbs.json_fields import (
    MAX_DOCUMENT_BYTES,
    b64decode,
    b64encode,
    b64url_decode,
    b64url_encode,
    canonical,
    integer,
    load_object,
    only_keys,
    text,
)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xfb\xff", bytes(range(256))])
def test_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data), "field", 1024) == data


@pytest.mark.parametrize("text", ["AA==", "A+B/", "é0", "AA\n", " AA", "A", 5, None])
def test_what_is_not_base64url(text: object) -> None:
    with pytest.raises(FormatError, match="base64url"):
        b64url_decode(text, "field")


def test_the_size_bound() -> None:
    b64url_decode("A" * 16, "field", max_size=8)
    with pytest.raises(FormatError, match="field: expected a base64url string"):
        b64url_decode("A" * 17, "field", max_size=8)


def test_documents_objects_and_their_keys() -> None:
    assert load_object(b"{}" + b" " * (MAX_DOCUMENT_BYTES - 2), "doc") == {}
    with pytest.raises(FormatError, match=f"doc: {MAX_DOCUMENT_BYTES + 1} bytes exceeds"):
        load_object(b"{}" + b" " * (MAX_DOCUMENT_BYTES - 1), "doc")
    with pytest.raises(FormatError, match="doc: expected a JSON object, got list"):
        load_object("[]", "doc")
    with pytest.raises(FormatError, match="doc: not JSON"):
        load_object("{", "doc")
    only_keys({"a": 1, "b": 2}, "doc", {"a"}, {"b"})
    with pytest.raises(FormatError, match="doc: missing a, c"):
        only_keys({"b": 1}, "doc", {"a", "c"}, {"b"})
    with pytest.raises(FormatError, match="doc: unknown field x, y"):
        only_keys({"a": 1, "y": 2, "x": 3}, "doc", {"a"})


def test_strings_and_integers() -> None:
    assert text({"k": "abcd"}, "k", "doc", max_size=4) == "abcd"
    with pytest.raises(FormatError, match=r"doc\.k: longer than 3 characters"):
        text({"k": "abcd"}, "k", "doc", max_size=3)
    with pytest.raises(FormatError, match=r"doc\.k: expected a string"):
        text({"k": 5}, "k", "doc")
    assert integer({"n": 7}, "n", "doc") == 7
    for value in (True, "7", 7.0, None):
        with pytest.raises(FormatError, match=r"doc\.n: expected an integer"):
            integer({"n": value}, "n", "doc")


def test_standard_base64() -> None:
    assert b64decode(b64encode(b"\xff" * 7), "doc") == b"\xff" * 7
    assert b64decode("A" * 8, "doc", max_size=6) == bytes(6)
    with pytest.raises(FormatError, match="doc: longer than 6 bytes"):
        b64decode("A" * 12, "doc", max_size=6)
    assert b64decode("A" * 8, "doc", max_size=4) == bytes(6)  # within the 4-character group
    with pytest.raises(FormatError, match="doc: longer than 3 bytes"):
        b64decode("A" * 8, "doc", max_size=3)
    for bad in ("AA!A", "AA-A", "AAA", "AA\nAA=="):
        with pytest.raises(FormatError, match="doc: not valid base64"):
            b64decode(bad, "doc")
    with pytest.raises(FormatError, match="doc: expected a base64 string"):
        b64decode(b"AAAA", "doc")


def test_the_canonical_bytes() -> None:
    assert canonical({"b": "é", "a": [1, {"d": 2, "c": 3}]}) == (
        '{"a":[1,{"c":3,"d":2}],"b":"é"}'.encode())
