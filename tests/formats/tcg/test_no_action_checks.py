"""EV_NO_ACTION event data (PFP 1.05 r23 section 10.4.5) one check at a time: StartupLocality
(Table 24), the SP800-155 platform-identity events (Table 25) and the legacy Spec ID Event00 —
the bytes, each refusal with its message, and what `cvm eventlog` shows of them."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, TruncatedError, UsageError
from cvm.formats.tcg.no_action import (
    LegacySpecIdEvent,
    Sp800155Event,
    StartupLocalityEvent,
)
from cvm.wire import Guid

LOCALITY = b"StartupLocality\0"
GUID = Guid.parse("01234567-89ab-cdef-0123-456789abcdef")


def _refused(parse: object, data: bytes, message: str,
             kind: type[FormatError] = FormatError) -> None:
    with pytest.raises(kind) as caught:
        parse(data)  # type: ignore[operator]
    assert str(caught.value) == message


@pytest.mark.parametrize("locality", [0, 3, 4])
def test_startup_locality_read_and_written(locality: int) -> None:
    data = LOCALITY + bytes([locality])
    event = StartupLocalityEvent.parse(data)
    assert event == StartupLocalityEvent(locality)
    assert StartupLocalityEvent.probe(data) == event
    assert event.to_bytes() == data
    assert event.describe() == f"StartupLocality {locality}"
    assert event.to_json() == {"kind": "StartupLocality", "locality": locality}


def test_startup_locality_refusals() -> None:
    parse = StartupLocalityEvent.parse
    _refused(parse, LOCALITY + b"\x05", "StartupLocality event: locality 5 is outside 0..4")
    _refused(parse, LOCALITY + b"\xff", "StartupLocality event: locality 255 is outside 0..4")
    _refused(parse, b"StartupLocality\x01\x00", "StartupLocality event: wrong signature")
    _refused(parse, LOCALITY, "StartupLocality event: StartupLocality needs 1 bytes at "
                              "offset 0x10, only 0 left", TruncatedError)
    _refused(parse, LOCALITY + b"\0\0",
             "StartupLocality event: 1 unexpected trailing bytes at offset 0x11")
    for bad in (-1, 5):
        with pytest.raises(UsageError) as caught:
            StartupLocalityEvent(bad)
        assert str(caught.value) == f"StartupLocality {bad} is outside 0..4"


def test_startup_locality_probe() -> None:
    assert StartupLocalityEvent.probe(b"StartupLocalitX\0\x03") is None
    assert StartupLocalityEvent.probe(b"") is None
    with pytest.raises(FormatError):
        StartupLocalityEvent.probe(LOCALITY + b"\x09")


@pytest.mark.parametrize("signature", [b"SP800-155 Event\0", b"SP800-155 Event3"])
def test_sp800_155_read_and_written(signature: bytes) -> None:
    data = signature + b"\x78\x56\x34\x12" + GUID.to_bytes() + b"strings"
    event = Sp800155Event.parse(data)
    assert event == Sp800155Event(signature, 0x12345678, GUID, b"strings")
    assert event.to_bytes() == data
    name = signature.rstrip(b"\0").decode()
    assert event.describe() == f"{name} vendor 0x12345678 manifest {GUID}"
    assert event.to_json() == {"kind": name, "vendor_id": 0x12345678,
                               "reference_manifest_guid": str(GUID), "rest": "737472696e6773"}


def test_sp800_155_refusals() -> None:
    parse = Sp800155Event.parse
    _refused(parse, b"SP800-155 Event4" + bytes(20), "SP800-155 event: wrong signature")
    _refused(parse, b"SP800-155 Event\0" + bytes(3),
             "SP800-155 event: VendorId needs 4 bytes at offset 0x10, only 3 left",
             TruncatedError)
    _refused(parse, b"SP800-155 Event\0" + bytes(19),
             "SP800-155 event: ReferenceManifestGuid needs 16 bytes at offset 0x14, "
             "only 15 left", TruncatedError)
    assert parse(b"SP800-155 Event\0" + bytes(20)).rest == b""


def test_legacy_spec_id_event00() -> None:
    data = (b"Spec ID Event00\0" + b"\x01\0\0\0" + bytes([2, 1, 3, 2]) + b"\x02" + b"vi")
    event = LegacySpecIdEvent.parse(data)
    assert event == LegacySpecIdEvent(1, 2, 1, 3, 2, b"vi")
    assert event.to_bytes() == data
    assert event.describe() == "Spec ID Event00 (TCG EFI 1.2)"
    assert event.to_json() == {"kind": "Spec ID Event00", "platform_class": 1,
                               "spec_version": "1.2", "spec_errata": 3, "uintn_size": 2,
                               "vendor_info": "7669"}
    parse = LegacySpecIdEvent.parse
    _refused(parse, b"Spec ID Event03\0" + data[16:],
             "TCG_EfiSpecIdEventStruct: wrong signature")
    _refused(parse, data + b"\0",
             "TCG_EfiSpecIdEventStruct: 1 unexpected trailing bytes at offset 0x1b")
    for cut, field, at, size in ((16, "platformClass", 16, 4), (20, "specVersionMinor", 20, 1),
                                 (21, "specVersionMajor", 21, 1), (22, "specErrata", 22, 1),
                                 (23, "uintnSize", 23, 1), (24, "vendorInfoSize", 24, 1),
                                 (26, "vendorInfo", 25, 2)):
        _refused(parse, data[:cut], f"TCG_EfiSpecIdEventStruct: {field} needs {size} bytes "
                                    f"at offset {at:#x}, only {cut - at} left", TruncatedError)


@pytest.mark.parametrize(("parse", "what"), [
    (StartupLocalityEvent.parse, "StartupLocality event"),
    (Sp800155Event.parse, "SP800-155 event"),
    (LegacySpecIdEvent.parse, "TCG_EfiSpecIdEventStruct"),
])
def test_data_shorter_than_a_signature_names_the_signature(parse: object, what: str) -> None:
    _refused(parse, b"SP800-155",
             f"{what}: signature needs 16 bytes at offset 0x0, only 9 left", TruncatedError)
