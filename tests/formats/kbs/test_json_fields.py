"""The key broker's base64url fields: JOSE's alphabet, no padding, nothing else."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.formats.kbs.json_fields import b64url_decode, b64url_encode


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
