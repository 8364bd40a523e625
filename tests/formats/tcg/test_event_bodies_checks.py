"""The event bodies the appraisal explains, check by check: UEFI_VARIABLE_DATA, UEFI_GPT_DATA,
the firmware-blob and handoff-table records (PFP 1.05 r23 section 10.4) — their bytes, every
refusal with its message (the structure, the field and its offset), and what is shown of them."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, TruncatedError, UsageError
from cvm.formats.tcg.firmware_blob import FirmwareBlob, HandoffTables
from cvm.formats.tcg.gpt_data import UefiGptData
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.wire import Guid

GUID = Guid.parse("8be4df61-93ca-11d2-aa0d-00e098032b8c")
OTHER = Guid.parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")


def _refused(call: object, message: str, kind: type[FormatError] = FormatError) -> None:
    with pytest.raises(kind) as caught:
        call()  # type: ignore[operator]
    assert str(caught.value) == message


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


# --- UEFI_VARIABLE_DATA ---------------------------------------------------------------------


def _variable(name: str, data: bytes, trailing: bytes = b"", *, name_length: int | None = None,
              data_length: int | None = None) -> bytes:
    raw_name = name.encode("utf-16-le")
    return (GUID.to_bytes() + _u64(len(raw_name) // 2 if name_length is None else name_length)
            + _u64(len(data) if data_length is None else data_length) + raw_name + data
            + trailing)


def test_variable_data_bytes_and_fields() -> None:
    data = _variable("SecureBoot", b"\x01")
    value = UefiVariableData.parse(data)
    assert value == UefiVariableData(GUID, "SecureBoot", b"\x01")
    assert value.to_bytes() == data
    assert data[16:24] == _u64(10)  # CHAR16 count, not bytes
    # A name outside the BMP counts two CHAR16.
    wide = UefiVariableData(GUID, "a\U0001F600", b"")
    assert wide.to_bytes()[16:24] == _u64(3)
    assert UefiVariableData.parse(wide.to_bytes()) == wide


def test_variable_data_keeps_stray_bytes_after_the_structure() -> None:
    data = _variable("MokList", b"ab", b"\0\0\0")
    value = UefiVariableData.parse(data)
    assert (value.data, value.trailing) == (b"ab", b"\0\0\0")
    assert value.to_bytes() == data
    assert value.describe() == f"MokList ({GUID}) 2 bytes (+3 stray bytes)"
    assert UefiVariableData(GUID, "db", bytes(5)).describe() == f"db ({GUID}) 5 bytes"
    assert value.to_json() == {"kind": "UEFI_VARIABLE_DATA", "vendor_guid": str(GUID),
                               "name": "MokList", "data": "6162", "trailing": "000000"}


def test_a_name_longer_than_the_event_is_refused() -> None:
    # 4 bytes after the lengths: a name of 2 CHAR16 fits, 3 do not.
    assert UefiVariableData.parse(_variable("ab", b"")).name == "ab"
    data = _variable("ab", b"", name_length=3)
    _refused(lambda: UefiVariableData.parse(data),
             "UEFI_VARIABLE_DATA: UnicodeNameLength 3 exceeds the event (at offset 0x20)")
    huge = _variable("ab", b"", name_length=2**63)
    _refused(lambda: UefiVariableData.parse(huge),
             f"UEFI_VARIABLE_DATA: UnicodeNameLength {2**63} exceeds the event (at offset 0x20)")
    # The name may fill the event only when the data is empty.
    data = _variable("abc", b"", data_length=1)
    _refused(lambda: UefiVariableData.parse(data),
             "UEFI_VARIABLE_DATA: VariableData needs 1 bytes at offset 0x26, only 0 left",
             TruncatedError)


@pytest.mark.parametrize(("cut", "field", "at", "size"), [
    (15, "VariableName", 0, 16), (16, "UnicodeNameLength", 16, 8),
    (24, "VariableDataLength", 24, 8), (31, "VariableDataLength", 24, 8),
])
def test_a_cut_variable_header_names_its_field(cut: int, field: str, at: int, size: int) -> None:
    data = _variable("X", b"")[:cut]
    _refused(lambda: UefiVariableData.parse(data),
             f"UEFI_VARIABLE_DATA: {field} needs {size} bytes at offset {at:#x}, "
             f"only {cut - at} left", TruncatedError)


def test_a_name_that_is_not_utf16_is_refused() -> None:
    lone = GUID.to_bytes() + _u64(1) + _u64(0) + b"\x00\xd8"
    _refused(lambda: UefiVariableData.parse(lone),
             "UEFI_VARIABLE_DATA: UnicodeName is not UTF-16")
    with pytest.raises(UsageError) as caught:
        UefiVariableData(GUID, "a\ud800", b"")
    assert str(caught.value) == "variable name 'a\\ud800' is not valid UTF-16"


# --- UEFI_GPT_DATA --------------------------------------------------------------------------


def _gpt_header(entry_size: int = 128, signature: bytes = b"EFI PART") -> bytes:
    header = bytearray(92)
    header[0:8] = signature
    header[0x38:0x48] = OTHER.to_bytes()
    header[0x50:0x54] = (4).to_bytes(4, "little")
    header[0x54:0x58] = entry_size.to_bytes(4, "little")
    return bytes(header)


def _entry(name: str, size: int = 128) -> bytes:
    entry = bytearray(size)
    entry[0:16] = OTHER.to_bytes()
    entry[16:32] = GUID.to_bytes()
    entry[32:40] = _u64(0x800)
    entry[40:48] = _u64(0x1FFFF)
    entry[48:56] = _u64(1 << 63)
    entry[56 : 56 + 2 * len(name)] = name.encode("utf-16-le")
    return bytes(entry)


def test_gpt_data_bytes_and_what_is_shown() -> None:
    entries = (_entry("EFI system"), _entry("root"))
    data = _gpt_header() + _u64(2) + b"".join(entries)
    value = UefiGptData.parse(data)
    assert value == UefiGptData(_gpt_header(), entries)
    assert value.to_bytes() == data
    assert value.entry_size == 128 and value.disk_guid() == OTHER
    assert value.describe() == f"GPT disk {OTHER}, 2 partition(s)"
    shown = value.to_json()
    assert shown["kind"] == "UEFI_GPT_DATA" and shown["disk_guid"] == str(OTHER)
    assert shown["header"] == _gpt_header().hex()
    assert shown["partitions"] == [
        {"type_guid": str(OTHER), "unique_guid": str(GUID), "starting_lba": 0x800,
         "ending_lba": 0x1FFFF, "attributes": 1 << 63, "name": name}
        for name in ("EFI system", "root")]


def test_gpt_data_with_larger_entries_and_none() -> None:
    entries = (_entry("a", 256),)
    data = _gpt_header(256) + _u64(1) + entries[0]
    assert UefiGptData.parse(data).partitions == entries
    assert UefiGptData.parse(_gpt_header() + _u64(0)).partitions == ()


def test_gpt_data_refusals() -> None:
    parse = UefiGptData.parse
    _refused(lambda: parse(_gpt_header(signature=b"EFI PARX") + _u64(0)),
             "UEFI_GPT_DATA: header signature is not 'EFI PART'")
    _refused(lambda: parse(_gpt_header(127) + _u64(0)),
             "UEFI_GPT_DATA: SizeOfPartitionEntry 127 is below 128")
    _refused(lambda: parse(_gpt_header(0) + _u64(0)),
             "UEFI_GPT_DATA: SizeOfPartitionEntry 0 is below 128")
    _refused(lambda: parse(_gpt_header()[:91]),
             "UEFI_GPT_DATA: UEFIPartitionHeader needs 92 bytes at offset 0x0, only 91 left",
             TruncatedError)
    _refused(lambda: parse(_gpt_header() + bytes(7)),
             "UEFI_GPT_DATA: NumberOfPartitions needs 8 bytes at offset 0x5c, only 7 left",
             TruncatedError)
    for count, extra in ((2, 128), (1, 127), (1, 129), (0, 1), (2**62, 128)):
        data = _gpt_header() + _u64(count) + bytes(extra)
        _refused(lambda data=data: parse(data),
                 f"UEFI_GPT_DATA: {count} partitions of 128 bytes do not fill the event "
                 "(at offset 0x64)")


# --- UEFI_PLATFORM_FIRMWARE_BLOB(2) ---------------------------------------------------------


def test_firmware_blob_bytes_and_what_is_shown() -> None:
    data = _u64(0xFFC00000) + _u64(0x400000)
    blob = FirmwareBlob.parse(data)
    assert blob == FirmwareBlob(0xFFC00000, 0x400000) and blob.description is None
    assert blob.to_bytes() == data
    assert blob.describe() == "base 0xffc00000 length 0x400000"
    assert blob.to_json() == {"kind": "UEFI_PLATFORM_FIRMWARE_BLOB", "description": None,
                              "base": 0xFFC00000, "length": 0x400000}
    data2 = b"\x05Fv\xffX\0" + data
    blob2 = FirmwareBlob.parse(data2, 2)
    assert blob2 == FirmwareBlob(0xFFC00000, 0x400000, b"Fv\xffX\0")
    assert blob2.to_bytes() == data2
    assert blob2.describe() == "'Fv\ufffdX' base 0xffc00000 length 0x400000"
    assert blob2.to_json()["description"] == "Fv\ufffdX"
    assert FirmwareBlob.parse(b"\0" + data, 2).description == b""


def test_firmware_blob_refusals_name_the_structure_and_field() -> None:
    data = _u64(1) + _u64(2)
    _refused(lambda: FirmwareBlob.parse(data + b"\0"),
             "UEFI_PLATFORM_FIRMWARE_BLOB: 1 unexpected trailing bytes at offset 0x10")
    _refused(lambda: FirmwareBlob.parse(data[:7]),
             "UEFI_PLATFORM_FIRMWARE_BLOB: BlobBase needs 8 bytes at offset 0x0, only 7 left",
             TruncatedError)
    _refused(lambda: FirmwareBlob.parse(data[:15]),
             "UEFI_PLATFORM_FIRMWARE_BLOB: BlobLength needs 8 bytes at offset 0x8, "
             "only 7 left", TruncatedError)
    _refused(lambda: FirmwareBlob.parse(b"", 2),
             "UEFI_PLATFORM_FIRMWARE_BLOB2: BlobDescriptionSize needs 1 bytes at offset 0x0, "
             "only 0 left", TruncatedError)
    _refused(lambda: FirmwareBlob.parse(b"\x09abc", 2),
             "UEFI_PLATFORM_FIRMWARE_BLOB2: BlobDescription needs 9 bytes at offset 0x1, "
             "only 3 left", TruncatedError)
    _refused(lambda: FirmwareBlob.parse(b"\x01a" + data + b"\0", 2),
             "UEFI_PLATFORM_FIRMWARE_BLOB2: 1 unexpected trailing bytes at offset 0x12")


# --- UEFI_HANDOFF_TABLE_POINTERS(2) ---------------------------------------------------------


def test_handoff_tables_bytes_and_what_is_shown() -> None:
    data = _u64(2) + GUID.to_bytes() + _u64(0x7F000) + OTHER.to_bytes() + _u64(0x10)
    tables = HandoffTables.parse(data)
    assert tables == HandoffTables(((GUID, 0x7F000), (OTHER, 0x10)))
    assert tables.to_bytes() == data
    assert tables.describe() == f"{GUID}@0x7f000, {OTHER}@0x10"
    assert tables.to_json() == {
        "kind": "UEFI_HANDOFF_TABLE_POINTERS", "description": None,
        "tables": [{"vendor_guid": str(GUID), "vendor_table": 0x7F000},
                   {"vendor_guid": str(OTHER), "vendor_table": 0x10}]}
    data2 = b"\x04SMB\0" + data
    tables2 = HandoffTables.parse(data2, 2)
    assert tables2.description == b"SMB\0" and tables2.to_bytes() == data2
    assert tables2.describe() == f"'SMB' {GUID}@0x7f000, {OTHER}@0x10"
    assert tables2.to_json()["description"] == "SMB"
    assert HandoffTables.parse(_u64(0)).tables == ()


def test_handoff_tables_refusals() -> None:
    one = _u64(1) + GUID.to_bytes() + _u64(0)
    for data in (one + b"\0", one[:-1], _u64(2) + one[8:], _u64(2**61) + one[8:]):
        count = int.from_bytes(data[:8], "little")
        _refused(lambda data=data: HandoffTables.parse(data),
                 f"UEFI_HANDOFF_TABLE_POINTERS: {count} tables do not fill the event "
                 "(at offset 0x8)")
    _refused(lambda: HandoffTables.parse(b"\x01a" + _u64(1), 2),
             "UEFI_HANDOFF_TABLE_POINTERS2: 1 tables do not fill the event (at offset 0xa)")
    _refused(lambda: HandoffTables.parse(b"\x01a" + _u64(0)[:5], 2),
             "UEFI_HANDOFF_TABLE_POINTERS2: NumberOfTables needs 8 bytes at offset 0x2, "
             "only 5 left", TruncatedError)
    _refused(lambda: HandoffTables.parse(b"\x05a", 2),
             "UEFI_HANDOFF_TABLE_POINTERS2: TableDescription needs 5 bytes at offset 0x1, "
             "only 1 left", TruncatedError)


def test_a_partition_name_is_shown_whatever_its_bytes() -> None:
    # A name that is not UTF-16 is shown with replacement characters, not refused (the record
    # is the firmware's measurement; showing it must not fail); only NULs are cut off the end.
    lone = bytearray(_entry(""))
    lone[56:60] = b"A\x00\x00\xd8"
    ends_in_x = _entry("EFI-X")
    data = _gpt_header() + _u64(2) + bytes(lone) + ends_in_x
    partitions = UefiGptData.parse(data).to_json()["partitions"]
    assert [p["name"] for p in partitions] == ["A\ufffd", "EFI-X"]  # type: ignore[attr-defined]


def test_handoff_tables2_without_a_description_size() -> None:
    _refused(lambda: HandoffTables.parse(b"", 2),
             "UEFI_HANDOFF_TABLE_POINTERS2: TableDescriptionSize needs 1 bytes at offset 0x0, "
             "only 0 left", TruncatedError)
