"""The SVSM protocol buffers the SVSM reads from the guest OS (AMD 58019): the vTPM request and
response page, the attestation request, the PVALIDATE list and the services manifest. Each
refusal names the structure and the field (the SVSM's log and ``cvm`` print it), each limit is
exact both ways, every field sits at its offset in its byte order, and a well-formed vTPM page
is read by the one-struct-call fast path, not field by field."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from cvm.errors import FormatError, TruncatedError, UsageError
from cvm.formats.svsm import vtpm_command
from cvm.formats.svsm.attest_request import AttestRequest
from cvm.formats.svsm.pvalidate_request import (
    MAX_ENTRIES,
    PvalidateEntry,
    PvalidateRequest,
    frame_address,
)
from cvm.formats.svsm.services_manifest import (
    MANIFEST_GUID,
    VTPM_SERVICE_GUID,
    ServicesManifest,
)
from cvm.formats.svsm.vtpm_command import (
    MAX_INBUF,
    MAX_OUTBUF,
    VtpmCommandRequest,
    VtpmCommandResponse,
)
from cvm.wire import Guid


def _le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def _short(what: str, field: str, size: int, offset: int, left: int = 0) -> str:
    return f"{what}: {field} needs {size} bytes at offset {offset:#x}, only {left} left"


def _refuse(*args: object) -> object:
    raise AssertionError("the field-by-field path was taken for a well-formed page")


# ---- SVSM_VTPM_COMMAND ----------------------------------------------------------------------
def test_a_vtpm_request_is_command_locality_size_then_the_tpm_bytes_little_endian() -> None:
    data = _le(8, 4) + b"\x03" + _le(2, 4) + b"ab"
    assert VtpmCommandRequest(3, b"ab").to_bytes() == data
    assert VtpmCommandRequest.from_bytes(data + bytes(100)) == VtpmCommandRequest(3, b"ab")
    other = VtpmCommandRequest.from_bytes(_le(0x01020307, 4) + b"\x04" + _le(0, 4))
    assert other == VtpmCommandRequest(4, b"", 0x01020307)  # the SVSM judges the command
    assert VtpmCommandRequest(4, b"", 0x01020307).to_bytes() == bytes.fromhex(
        "07030201" "04" "00000000")


def test_a_vtpm_response_is_its_size_then_the_tpm_bytes_little_endian() -> None:
    assert VtpmCommandResponse(b"xyz").to_bytes() == _le(3, 4) + b"xyz"
    assert VtpmCommandResponse.from_bytes(_le(3, 4) + b"xyz" + bytes(9)) == VtpmCommandResponse(
        b"xyz")


def test_the_largest_command_and_response_a_page_holds_are_taken_and_one_more_refused() -> None:
    page = _le(8, 4) + b"\x00" + _le(MAX_INBUF, 4) + bytes(MAX_INBUF)
    assert len(page) == 0x1000
    assert VtpmCommandRequest.from_bytes(page).command == bytes(MAX_INBUF)
    assert VtpmCommandRequest(0, bytes(MAX_INBUF)).to_bytes() == page
    with pytest.raises(FormatError) as caught:
        VtpmCommandRequest.from_bytes(_le(8, 4) + b"\x00" + _le(MAX_INBUF + 1, 4) + bytes(5000))
    assert str(caught.value) == "SVSM_VTPM_COMMAND: inbuf_size 4088 exceeds 4087"
    with pytest.raises(FormatError) as caught:
        VtpmCommandRequest(0, bytes(MAX_INBUF + 1)).to_bytes()
    assert str(caught.value) == "TPM command of 4088 bytes exceeds 4087"
    page = _le(MAX_OUTBUF, 4) + bytes(MAX_OUTBUF)
    assert len(page) == 0x1000
    assert VtpmCommandResponse.from_bytes(page).response == bytes(MAX_OUTBUF)
    assert VtpmCommandResponse(bytes(MAX_OUTBUF)).to_bytes() == page
    with pytest.raises(FormatError) as caught:
        VtpmCommandResponse.from_bytes(_le(MAX_OUTBUF + 1, 4) + bytes(5000))
    assert str(caught.value) == "SVSM_VTPM_COMMAND: outbuf_size 4093 exceeds 4092"
    with pytest.raises(FormatError) as caught:
        VtpmCommandResponse(bytes(MAX_OUTBUF + 1)).to_bytes()
    assert str(caught.value) == "TPM response of 4093 bytes exceeds 4092"


@pytest.mark.parametrize(("data", "message"), [
    (b"", _short("SVSM_VTPM_COMMAND request", "command", 4, 0)),
    (b"\x08\x00\x00", _short("SVSM_VTPM_COMMAND request", "command", 4, 0, 3)),
    (_le(8, 4), _short("SVSM_VTPM_COMMAND request", "locality", 1, 4)),
    (_le(8, 4) + b"\x00", _short("SVSM_VTPM_COMMAND request", "inbuf_size", 4, 5)),
    (_le(8, 4) + b"\x00\x01\x00\x00", _short("SVSM_VTPM_COMMAND request", "inbuf_size", 4, 5,
                                               3)),
    (_le(8, 4) + b"\x00" + _le(3, 4) + b"ab", _short("SVSM_VTPM_COMMAND request", "inbuf", 3,
                                                     9, 2)),
])
def test_a_cut_vtpm_request_names_its_field(data: bytes, message: str) -> None:
    with pytest.raises(TruncatedError) as caught:
        VtpmCommandRequest.from_bytes(data)
    assert str(caught.value) == message


@pytest.mark.parametrize(("data", "message"), [
    (b"\x01\x00", _short("SVSM_VTPM_COMMAND response", "outbuf_size", 4, 0, 2)),
    (_le(4, 4) + b"abc", _short("SVSM_VTPM_COMMAND response", "outbuf", 4, 4, 3)),
])
def test_a_cut_vtpm_response_names_its_field(data: bytes, message: str) -> None:
    with pytest.raises(TruncatedError) as caught:
        VtpmCommandResponse.from_bytes(data)
    assert str(caught.value) == message


def test_a_well_formed_vtpm_page_is_read_and_written_in_one_struct_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(VtpmCommandRequest, "_from_bytes_strict", classmethod(_refuse))
    monkeypatch.setattr(VtpmCommandResponse, "_from_bytes_strict", classmethod(_refuse))
    monkeypatch.setattr(vtpm_command, "Writer", _refuse)
    exact = _le(8, 4) + b"\x02" + _le(0, 4)  # nine bytes, an empty command
    assert VtpmCommandRequest.from_bytes(exact) == VtpmCommandRequest(2, b"")
    full = _le(8, 4) + b"\x02" + _le(3, 4) + b"abc"  # the command reaches the end exactly
    assert VtpmCommandRequest.from_bytes(full) == VtpmCommandRequest(2, b"abc")
    assert VtpmCommandRequest(2, b"abc").to_bytes() == full
    page = _le(8, 4) + b"\x00" + _le(MAX_INBUF, 4) + bytes(MAX_INBUF)
    assert VtpmCommandRequest.from_bytes(page).command == bytes(MAX_INBUF)
    assert VtpmCommandResponse.from_bytes(_le(0, 4)) == VtpmCommandResponse(b"")
    assert VtpmCommandResponse.from_bytes(_le(2, 4) + b"ok") == VtpmCommandResponse(b"ok")
    page = _le(MAX_OUTBUF, 4) + bytes(MAX_OUTBUF)
    assert VtpmCommandResponse.from_bytes(page).response == bytes(MAX_OUTBUF)


def test_a_request_field_out_of_range_is_refused_by_the_writer() -> None:
    with pytest.raises(UsageError) as caught:
        VtpmCommandRequest(256, b"").to_bytes()
    assert str(caught.value) == "value 256 does not fit in 1 bytes"
    with pytest.raises(UsageError) as caught:
        VtpmCommandRequest(0, b"", 1 << 32).to_bytes()
    assert str(caught.value) == f"value {1 << 32} does not fit in 4 bytes"


# ---- the attestation request ----------------------------------------------------------------
SERVICE = Guid(uuid.UUID("c476f1eb-0123-45a5-9641-b4e7dde5bfe3"))
ATTEST = AttestRequest(0x1111000, 0x4A0, 0x2222000, 64, 0x3333000, 0x1000, 0x4444000, 0x2000)
ATTEST_BYTES = (
    _le(0x1111000, 8) + _le(0x4A0, 4) + bytes(4) + _le(0x2222000, 8) + _le(64, 2) + bytes(6)
    + _le(0x3333000, 8) + _le(0x1000, 4) + bytes(4) + _le(0x4444000, 8) + _le(0x2000, 4)
    + bytes(4)
)


def test_an_attest_services_request_is_its_fields_at_their_offsets() -> None:
    assert ATTEST.to_bytes() == ATTEST_BYTES
    parsed = AttestRequest.from_bytes(ATTEST_BYTES + b"\xff" * 8, single=False)
    assert parsed == ATTEST
    assert parsed.service is None and parsed.manifest_version == 0


def test_a_single_service_request_adds_the_service_and_the_manifest_version() -> None:
    single = dataclasses.replace(ATTEST, service=SERVICE, manifest_version=7)
    data = ATTEST_BYTES + SERVICE.to_bytes() + _le(7, 4) + bytes(4)
    assert single.to_bytes() == data
    assert AttestRequest.from_bytes(data, single=True) == single


def test_a_short_attest_request_is_refused_naming_its_kind() -> None:
    with pytest.raises(FormatError) as caught:
        AttestRequest.from_bytes(ATTEST_BYTES[:-1], single=False)
    assert str(caught.value) == "SVSM attest services request: expected 0x40 bytes, got 0x3f"
    with pytest.raises(FormatError) as caught:
        AttestRequest.from_bytes(ATTEST_BYTES, single=True)
    assert str(caught.value) == (
        "SVSM attest single service request: expected 0x58 bytes, got 0x40")


@pytest.mark.parametrize(("offset", "span"), [(0x0C, "0xc..0xf"), (0x1A, "0x1a..0x1f"),
                                              (0x3F, "0x3c..0x3f")])
def test_a_reserved_byte_of_an_attest_request_is_refused(offset: int, span: str) -> None:
    data = bytearray(ATTEST_BYTES)
    data[offset] = 1
    with pytest.raises(FormatError) as caught:
        AttestRequest.from_bytes(bytes(data), single=False)
    assert str(caught.value) == (
        f"SVSM attest services request: reserved bytes at {span} are not zero")


# ---- PVALIDATE ------------------------------------------------------------------------------
def test_a_pvalidate_entry_is_its_frame_action_ignore_cf_and_size_bits() -> None:
    assert PvalidateEntry.from_int(0x12345 << 12 | 0b0101) == PvalidateEntry(0x12345, True, 1)
    assert PvalidateEntry.from_int(0x12345 << 12 | 0b1000) == PvalidateEntry(
        0x12345, False, 0, ignore_cf=True)
    top = ((1 << 52) - 1) << 12 | 0b1101
    assert PvalidateEntry.from_int(top) == PvalidateEntry((1 << 52) - 1, True, 1, True)
    assert PvalidateEntry((1 << 52) - 1, True, 1, True).to_int() == top
    assert PvalidateEntry(7, False).to_int() == 7 << 12
    assert PvalidateEntry(7, True, ignore_cf=True).to_int() == 7 << 12 | 0b1100


def test_a_pvalidate_entry_names_the_page_it_validates() -> None:
    assert frame_address(0x12345) == 0x12345000
    assert PvalidateEntry(0x12345, True).gpa == 0x12345000
    assert PvalidateEntry.from_int(0xABCDE << 12 | 0b0100).gpa == 0xABCDE000


@pytest.mark.parametrize("bit", range(4, 12))
def test_each_reserved_bit_of_an_entry_is_refused(bit: int) -> None:
    value = 1 << 12 | 1 << bit
    with pytest.raises(FormatError) as caught:
        PvalidateEntry.from_int(value)
    assert str(caught.value) == f"PVALIDATE entry {value:#x}: reserved bits 11:4 are set"


@pytest.mark.parametrize("size", [2, 3])
def test_a_reserved_page_size_is_refused(size: int) -> None:
    with pytest.raises(FormatError) as caught:
        PvalidateEntry.from_int(1 << 12 | size)
    assert str(caught.value) == f"PVALIDATE entry {1 << 12 | size:#x}: page size {size} is reserved"


@pytest.mark.parametrize(("gfn", "size"), [(1 << 52, 0), (-1, 0), (5, 2), (5, -1)])
def test_an_entry_that_cannot_be_encoded_is_refused(gfn: int, size: int) -> None:
    with pytest.raises(UsageError) as caught:
        PvalidateEntry(gfn, True, size).to_int()
    assert str(caught.value) == f"PVALIDATE entry: frame {gfn:#x} or size {size}"


def _request(entries: int, following: int = 0, values: bytes | None = None) -> bytes:
    body = values if values is not None else b"".join(
        _le(i << 12 | 0b100, 8) for i in range(entries))
    return _le(entries, 2) + _le(following, 2) + bytes(4) + body


def test_a_pvalidate_request_of_a_full_page_is_taken_and_one_entry_more_refused() -> None:
    data = _request(MAX_ENTRIES, MAX_ENTRIES)
    assert len(data) == 0x1000
    request = PvalidateRequest.from_bytes(data)
    assert len(request.entries) == MAX_ENTRIES == 511 and request.next == MAX_ENTRIES
    assert request.entries[5] == PvalidateEntry(5, True)
    assert request.to_bytes() == data
    assert PvalidateRequest.count(data) == (MAX_ENTRIES, MAX_ENTRIES)
    with pytest.raises(FormatError) as caught:
        PvalidateRequest.count(_request(MAX_ENTRIES + 1))
    assert str(caught.value) == "PVALIDATE request: 512 entries, next 0"
    with pytest.raises(UsageError) as caught:
        PvalidateRequest((PvalidateEntry(1, True),) * (MAX_ENTRIES + 1)).to_bytes()
    assert str(caught.value) == "PVALIDATE request: 512 entries, next 0"


def test_next_may_reach_the_entry_count_but_not_pass_it() -> None:
    assert PvalidateRequest.count(_request(2, 2)) == (2, 2)
    assert PvalidateRequest.from_bytes(_request(2, 1)).next == 1
    with pytest.raises(FormatError) as caught:
        PvalidateRequest.from_bytes(_request(2, 3))
    assert str(caught.value) == "PVALIDATE request: 2 entries, next 3"
    two = (PvalidateEntry(1, True), PvalidateEntry(2, False))
    assert PvalidateRequest(two, 2).to_bytes() == _request(
        2, 2, _le(1 << 12 | 0b100, 8) + _le(2 << 12, 8))
    for following in (3, -1):
        with pytest.raises(UsageError) as caught:
            PvalidateRequest(two, following).to_bytes()
        assert str(caught.value) == f"PVALIDATE request: 2 entries, next {following}"


def test_a_pvalidate_request_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(FormatError) as caught:
        PvalidateRequest.from_bytes(bytes(7))
    assert str(caught.value) == "PVALIDATE request: 7 bytes, the header needs 8"
    assert PvalidateRequest.from_bytes(bytes(8)) == PvalidateRequest(())
    for data in (_request(1)[:-1], _request(1) + b"\x00"):
        with pytest.raises(FormatError) as caught:
            PvalidateRequest.from_bytes(data)
        assert str(caught.value) == f"PVALIDATE request: {len(data)} bytes for 1 entries"


def test_a_reserved_header_byte_is_refused() -> None:
    data = bytearray(_request(1))
    data[7] = 1
    with pytest.raises(FormatError) as caught:
        PvalidateRequest.from_bytes(bytes(data))
    assert str(caught.value) == (
        "SVSM PVALIDATE request header: reserved bytes at 0x4..0x7 are not zero")


# ---- the services manifest ------------------------------------------------------------------
OTHER = Guid(uuid.UUID("01234567-89ab-cdef-0123-456789abcdef"))


def _manifest(entries: list[tuple[Guid, int, int]], tail: bytes, total: int | None = None,
              count: int | None = None) -> bytes:
    table = b"".join(guid.to_bytes() + _le(offset, 4) + _le(size, 4)
                     for guid, offset, size in entries)
    size = 24 + len(table) + len(tail)
    return (MANIFEST_GUID.to_bytes() + _le(size if total is None else total, 4)
            + _le(len(entries) if count is None else count, 4) + table + tail)


def test_a_manifest_is_its_header_its_table_then_the_services_data() -> None:
    manifest = ServicesManifest(((VTPM_SERVICE_GUID, b"ek"), (OTHER, b"xyz")))
    data = _manifest([(VTPM_SERVICE_GUID, 72, 2), (OTHER, 74, 3)], b"ekxyz")
    assert manifest.to_bytes() == data
    assert ServicesManifest.from_bytes(data) == manifest
    assert ServicesManifest(()).to_bytes() == MANIFEST_GUID.to_bytes() + _le(24, 4) + _le(0, 4)


def test_a_service_may_start_right_after_the_table_and_end_at_the_end() -> None:
    data = _manifest([(OTHER, 48, 4)], b"abcd")
    assert ServicesManifest.from_bytes(data).service(OTHER) == b"abcd"


@pytest.mark.parametrize(("offset", "size"), [(47, 4), (48, 5), (44, 0), (0, 0)])
def test_an_entry_pointing_into_the_table_or_past_the_end_is_refused(offset: int,
                                                                     size: int) -> None:
    with pytest.raises(FormatError) as caught:
        ServicesManifest.from_bytes(_manifest([(OTHER, offset, size)], b"abcd"))
    assert str(caught.value) == "SVSM services manifest: entry points outside the data"


def test_size_fields_that_do_not_match_the_data_are_refused() -> None:
    for data in (_manifest([(OTHER, 48, 4)], b"abcd", total=51),
                 _manifest([(OTHER, 48, 4)], b"abcd", total=53),
                 _manifest([], b"", count=1),
                 _manifest([(OTHER, 48, 0)], b"", count=2)):
        with pytest.raises(FormatError) as caught:
            ServicesManifest.from_bytes(data)
        assert str(caught.value) == "SVSM services manifest: size fields do not match the data"
    exact = _manifest([(OTHER, 48, 0)], b"")  # the table fills the manifest exactly
    assert ServicesManifest.from_bytes(exact) == ServicesManifest(((OTHER, b""),))


def test_a_manifest_with_another_header_guid_is_refused() -> None:
    data = OTHER.to_bytes() + _manifest([], b"")[16:]
    with pytest.raises(FormatError) as caught:
        ServicesManifest.from_bytes(data)
    assert str(caught.value) == "SVSM services manifest: wrong header GUID"


@pytest.mark.parametrize(("cut", "field", "size"), [
    (0, "guid", 16), (16, "size", 4), (20, "count", 4),
])
def test_a_cut_manifest_header_names_its_field(cut: int, field: str, size: int) -> None:
    with pytest.raises(TruncatedError) as caught:
        ServicesManifest.from_bytes(_manifest([], b"")[:cut])
    assert str(caught.value) == _short("SVSM services manifest", field, size, cut)


def test_a_missing_service_is_refused_by_name() -> None:
    manifest = ServicesManifest(((OTHER, b"x"),))
    with pytest.raises(FormatError) as caught:
        manifest.service(VTPM_SERVICE_GUID)
    assert str(caught.value) == (
        "SVSM services manifest has no service c476f1eb-0123-45a5-9641-b4e7dde5bfe3")
    first = ServicesManifest(((OTHER, b"1"), (OTHER, b"2")))
    assert first.service(OTHER) == b"1"


def test_a_page_cut_inside_the_largest_command_or_response_is_refused_as_cut() -> None:
    """The size is allowed (4087, 4092) but the page ends first: a truncation naming the
    buffer, not a size over its maximum."""
    with pytest.raises(TruncatedError) as caught:
        VtpmCommandRequest.from_bytes(_le(8, 4) + b"\x00" + _le(MAX_INBUF, 4) + bytes(10))
    assert str(caught.value) == _short("SVSM_VTPM_COMMAND request", "inbuf", MAX_INBUF, 9, 10)
    with pytest.raises(TruncatedError) as caught:
        VtpmCommandResponse.from_bytes(_le(MAX_OUTBUF, 4) + bytes(10))
    assert str(caught.value) == _short("SVSM_VTPM_COMMAND response", "outbuf", MAX_OUTBUF, 4,
                                       10)


def test_the_field_by_field_reader_keeps_the_platform_command() -> None:
    """What the strict reader returns is what the fast path returns (the SVSM then refuses a
    platform command other than TPM_SEND_COMMAND)."""
    page = _le(0x10, 4) + b"\x03" + _le(2, 4) + b"ab"
    expected = VtpmCommandRequest(3, b"ab", 0x10)
    assert VtpmCommandRequest._from_bytes_strict(page) == expected
    assert VtpmCommandRequest.from_bytes(page) == expected
