"""The ``.pcrsig`` reader's checks one by one, each refusal by its message: the document, the
banks, the four keys of an entry, the PCR numbers, the hex and base64 fields and their sizes
per bank — and the compact JSON systemd-measure writes."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from cvm.errors import FormatError
from cvm.formats.pcr_signature import (
    PcrSignatureEntry,
    parse_pcr_signature,
    pcr_signature_bytes,
)

FINGERPRINT = bytes(range(32))
SIGNATURE = b"\x01" * 256


def _item(size: int = 32, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"pcrs": [11], "pkfp": FINGERPRINT.hex(), "pol": ("ab" * size),
                            "sig": base64.b64encode(SIGNATURE).decode()}
    item.update(changes)
    return item


def _parse(document: Any) -> tuple[PcrSignatureEntry, ...]:
    return parse_pcr_signature(json.dumps(document).encode())


def _refusal(call: Callable[[], object]) -> str:
    with pytest.raises(FormatError) as refused:
        call()
    assert type(refused.value) is FormatError
    return str(refused.value)


def test_each_bank_has_its_digest_size() -> None:
    document = {"sha1": [_item(20)], "sha256": [_item(32), _item(32, pcrs=[0, 23])],
                "sha384": [_item(48)]}
    entries = _parse(document)
    assert [(e.bank, len(e.policy), e.pcrs) for e in entries] == [
        ("sha1", 20, (11,)), ("sha256", 32, (11,)), ("sha256", 32, (0, 23)),
        ("sha384", 48, (11,))]
    assert entries[0] == PcrSignatureEntry("sha1", (11,), FINGERPRINT, b"\xab" * 20, SIGNATURE)
    for bank, size in (("sha1", 32), ("sha256", 20), ("sha256", 48), ("sha384", 32)):
        assert _refusal(lambda bank=bank, size=size: _parse({bank: [_item(size)]})) == (
            f".pcrsig: {bank}[0] has a fingerprint, policy or signature of the wrong size")


def test_the_fingerprint_is_32_bytes_and_the_signature_not_empty() -> None:
    wrong = ".pcrsig: sha256[1] has a fingerprint, policy or signature of the wrong size"
    for changes in ({"pkfp": "00" * 31}, {"pkfp": "00" * 33}, {"sig": ""}):
        assert _refusal(lambda changes=changes: _parse(
            {"sha256": [_item(), _item(**changes)]})) == wrong


def test_the_document_must_be_a_json_object_of_banks() -> None:
    assert _refusal(lambda: parse_pcr_signature(b"{")) == ".pcrsig: not JSON"
    assert _refusal(lambda: parse_pcr_signature(b"\xff")) == ".pcrsig: not JSON"
    for document in ([], {}, "sha256", None):
        assert _refusal(lambda document=document: _parse(document)) == (
            ".pcrsig: not an object of PCR banks")
    for bank, items in (("md5", []), ("SHA256", []), ("sha256", {}), ("sha256", None)):
        assert _refusal(lambda bank=bank, items=items: _parse({bank: items})) == (
            f".pcrsig: {bank!r} is not a PCR bank with a list of entries")
    assert _parse({"sha256": []}) == ()


def test_nul_padding_after_the_document_is_ignored() -> None:
    data = json.dumps({"sha256": [_item()]}).encode()
    assert parse_pcr_signature(data + bytes(100)) == parse_pcr_signature(data)
    assert _refusal(lambda: parse_pcr_signature(bytes(100) + data)) == ".pcrsig: not JSON"


def test_an_entry_holds_exactly_its_four_keys() -> None:
    exactly = ".pcrsig: sha256[0] must hold exactly pcrs, pkfp, pol, sig"
    extra = {**_item(), "extra": 1}
    missing = {k: v for k, v in _item().items() if k != "sig"}
    for item in (extra, missing, [], "entry", None):
        assert _refusal(lambda item=item: _parse({"sha256": [item]})) == exactly


@pytest.mark.parametrize("pcrs", [[], [24], [-1], [True], [11.0], ["11"], 11, None, [11, 24]])
def test_the_pcrs_are_a_list_of_pcr_numbers(pcrs: Any) -> None:
    assert _refusal(lambda: _parse({"sha256": [_item(pcrs=pcrs)]})) == (
        ".pcrsig: sha256[0].pcrs is not a list of PCR numbers")


@pytest.mark.parametrize("changes", [
    {"pkfp": "zz" * 32}, {"pkfp": 5}, {"pkfp": None}, {"pol": "abc"}, {"pol": ["ab"]},
    {"sig": "not base64!"}, {"sig": "AAA"}, {"sig": 5}])
def test_bad_hex_or_base64_is_refused(changes: dict[str, Any]) -> None:
    assert _refusal(lambda: _parse({"sha256": [_item(**changes)]})) == (
        ".pcrsig: sha256[0] has a bad hex or base64 field")


def test_the_document_is_written_compact_bank_by_bank() -> None:
    one = PcrSignatureEntry("sha256", (11,), FINGERPRINT, b"\x01" * 32, b"s1")
    two = PcrSignatureEntry("sha1", (7, 11), FINGERPRINT, b"\x02" * 20, b"s2")
    three = PcrSignatureEntry("sha256", (11,), FINGERPRINT, b"\x03" * 32, b"s3")
    data = pcr_signature_bytes((one, two, three))
    assert data == json.dumps({"sha256": [one.to_json(), three.to_json()],
                               "sha1": [two.to_json()]}, separators=(",", ":")).encode()
    assert b" " not in data
    assert one.to_json() == {"pcrs": [11], "pkfp": FINGERPRINT.hex(), "pol": "01" * 32,
                             "sig": base64.b64encode(b"s1").decode()}
    assert parse_pcr_signature(data) == (one, three, two)


def test_a_signature_with_characters_outside_base64_is_refused() -> None:
    for sig in ("AQID!", "AQ ID", "AQID\n", "AQ-D"):
        assert _refusal(lambda sig=sig: _parse({"sha256": [_item(sig=sig)]})) == (
            ".pcrsig: sha256[0] has a bad hex or base64 field")
    assert _parse({"sha256": [_item(sig="AQID")]})[0].signature == b"\x01\x02\x03"


def test_only_nul_bytes_are_dropped_from_the_end() -> None:
    data = json.dumps({"sha256": [_item()]}).encode()
    for tail in (b"X", b"X\0\0", b"XX"):
        assert _refusal(lambda tail=tail: parse_pcr_signature(data + tail)) == (
            ".pcrsig: not JSON")
