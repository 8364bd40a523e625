"""The strict JSON field readers' bounds, exactly: a field of its limit is read, one byte or
character more is refused with the field's name."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cvm.errors import FormatError
from cvm.formats.kbs.json_fields import b64decode, b64encode, b64url_decode, b64url_encode, text


def refused(message: str) -> Any:
    return pytest.raises(FormatError, match=f"^{re.escape(message)}$")


@pytest.mark.parametrize("size", [29, 30, 31, 32])
def test_base64_is_bounded_by_the_characters_max_size_bytes_need(size: int) -> None:
    """The bound is in whole groups of four characters (as ``test_standard_base64`` pins): a
    group over it is refused, whatever it decodes to (exact sizes are their readers' checks)."""
    limit = (size + 2) // 3 * 4
    assert b64decode(b64encode(bytes(size)), "evidence.quote.attest", size) == bytes(size)
    assert b64decode("A" * limit, "evidence.quote.attest", size) == bytes(limit // 4 * 3)
    with refused(f"evidence.quote.attest: longer than {size} bytes"):
        b64decode("A" * (limit + 4), "evidence.quote.attest", size)


def test_an_overlong_field_is_refused_before_it_is_decoded() -> None:
    """Characters beyond what ``max_size`` bytes need are refused whatever they are."""
    with refused("evidence.crl: longer than 30 bytes"):
        b64decode("!" * 41, "evidence.crl", 30)
    with refused("evidence.crl: longer than 2 bytes"):
        b64decode("!!!!!", "evidence.crl", 2)
    with refused("evidence.crl: not valid base64"):
        b64decode("!" * 40, "evidence.crl", 30)


def test_the_default_bounds() -> None:
    assert text({"k": "a" * 4096}, "k", "doc") == "a" * 4096
    with refused("doc.k: longer than 4096 characters"):
        text({"k": "a" * 4097}, "k", "doc")
    assert b64url_decode("A" * 8192, "doc.k") == bytes(6144)
    with refused("doc.k: expected a base64url string"):
        b64url_decode("A" * 8194, "doc.k")


@pytest.mark.parametrize(("data", "encoded"), [
    (b"\x00\x00\x17", "AAAX"), (b"\x00\x00\x17\x00", "AAAXAA"), (b"\xfb\xff", "-_8")])
def test_base64url_is_written_without_padding_and_nothing_else_stripped(data: bytes,
                                                                          encoded: str) -> None:
    assert b64url_encode(data) == encoded
    assert b64url_decode(encoded, "k") == data
