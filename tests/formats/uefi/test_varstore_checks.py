"""The OVMF varstore's checks, one by one: each refusal and its message, the record states the
firmware treats as live, the record layout and an interrupted update (edk2's choice of record)."""

from __future__ import annotations

import itertools
import zlib

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.uefi.efi_time import EfiTime
from cvm.formats.uefi.guids import (
    EDKII_WORKING_BLOCK_SIGNATURE,
    EFI_AUTHENTICATED_VARIABLE,
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    EFI_SYSTEM_NV_DATA_FV,
)
from cvm.formats.uefi.variable import EfiVariable
from cvm.formats.uefi.varstore import (
    AUTHENTICATED_VARIABLE_HEADER,
    FIRMWARE_VOLUME_HEADER,
    VAR_ADDED,
    VAR_ADDED_IN_DELETED_TRANSITION,
    VariableRecord,
    Varstore,
    align4,
    find_variable,
    fv_checksum_ok,
    is_live,
    live_variables,
)

STORE = 0x48          # the variable store header, right after the firmware volume header
FIRST_RECORD = 0x64   # the first record, right after the 0x1C-byte store header
NEW_DBX = EfiVariable("dbx", EFI_IMAGE_SECURITY_DATABASE, 0x27, b"new revocations")
OLD_DBX = EfiVariable("dbx", EFI_IMAGE_SECURITY_DATABASE, 0x27, b"old")


def _with_state(store: Varstore, index: int, state: int) -> Varstore:
    data = bytearray(store.to_bytes())
    data[store.records[index].offset + 2] = state
    return Varstore.parse(bytes(data))


def _put(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


def _refit_checksum(data: bytes) -> bytes:
    header = bytearray(data[:0x48])
    header[0x32:0x34] = bytes(2)
    total = sum(int.from_bytes(header[i : i + 2], "little") for i in range(0, 0x48, 2))
    header[0x32:0x34] = (-total & 0xFFFF).to_bytes(2, "little")
    return bytes(header) + data[0x48:]


def _refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        Varstore.parse(data)
    assert str(caught.value) == message


# --- which record the firmware reads -------------------------------------------------------

def test_an_interrupted_update_reads_the_new_value_as_edk2_does() -> None:
    # edk2 marks the old record VAR_IN_DELETED_TRANSITION, appends the new one (VAR_ADDED) and
    # then deletes the old; a reset in between leaves both, and FindVariableEx takes the added one.
    store = Varstore.empty_4m().with_variables([OLD_DBX, NEW_DBX])
    store = _with_state(store, 0, VAR_ADDED_IN_DELETED_TRANSITION)
    assert [r.state for r in store.records] == [0x3E, 0x3F]
    assert all(r.live for r in store.records)
    assert store.get("dbx", EFI_IMAGE_SECURITY_DATABASE) == NEW_DBX
    assert store.get("dbx") == NEW_DBX
    assert store.variables == (NEW_DBX,)
    # Writing the store keeps the new value alone.
    assert store.set(EfiVariable("x", EFI_GLOBAL_VARIABLE, 7, b"1")).get("dbx") == NEW_DBX


def test_a_record_in_deleted_transition_alone_is_still_the_variable() -> None:
    store = _with_state(Varstore.empty_4m().with_variables([OLD_DBX]), 0,
                        VAR_ADDED_IN_DELETED_TRANSITION)
    assert store.get("dbx", EFI_IMAGE_SECURITY_DATABASE) == OLD_DBX
    assert store.variables == (OLD_DBX,)


def test_of_two_records_in_deleted_transition_the_last_is_read() -> None:
    store = Varstore.empty_4m().with_variables([OLD_DBX, NEW_DBX])
    store = _with_state(_with_state(store, 0, 0x3E), 1, 0x3E)
    assert store.get("dbx", EFI_IMAGE_SECURITY_DATABASE) == NEW_DBX


def test_of_two_added_records_the_first_is_read() -> None:
    store = Varstore.empty_4m().with_variables([OLD_DBX, NEW_DBX])
    assert store.get("dbx", EFI_IMAGE_SECURITY_DATABASE) == OLD_DBX


def test_an_added_record_before_one_in_transition_wins() -> None:
    store = _with_state(Varstore.empty_4m().with_variables([NEW_DBX, OLD_DBX]), 1, 0x3E)
    assert store.get("dbx", EFI_IMAGE_SECURITY_DATABASE) == NEW_DBX
    assert store.variables == (NEW_DBX,)


def test_the_vendor_and_the_name_select_the_record() -> None:
    other = EfiVariable("dbx", EFI_GLOBAL_VARIABLE, 7, b"other vendor")
    store = Varstore.empty_4m().with_variables([other, NEW_DBX])
    assert store.get("dbx", EFI_IMAGE_SECURITY_DATABASE) == NEW_DBX
    assert store.get("dbx", EFI_GLOBAL_VARIABLE) == other
    assert store.get("dbx") == other
    assert store.get("db") is None
    assert store.get("dbx", EFI_AUTHENTICATED_VARIABLE) is None
    # A record in transition under another vendor does not hide this vendor's added record.
    store = _with_state(store, 0, 0x3E)
    assert store.variables == (other, NEW_DBX)
    assert store.get("dbx", EFI_GLOBAL_VARIABLE) == other


@pytest.mark.parametrize("state", [0x3C, 0x3D, 0x7F, 0xFF, 0x00, 0x3B, 0xBF])
def test_deleted_and_half_written_records_are_not_variables(state: int) -> None:
    store = _with_state(Varstore.empty_4m().with_variables([OLD_DBX, NEW_DBX]), 0, state)
    assert not store.records[0].live and not is_live(state)
    assert store.variables == (NEW_DBX,)
    store = _with_state(store, 1, state)
    assert store.variables == ()
    assert store.get("dbx") is None
    assert find_variable(store.records, "dbx", None) is None


def test_the_live_states() -> None:
    assert VAR_ADDED == 0x3F and VAR_ADDED_IN_DELETED_TRANSITION == 0x3E
    assert [s for s in range(256) if is_live(s)] == [0x3E, 0x3F]


def test_live_variables_keeps_the_store_order() -> None:
    first = EfiVariable("a", EFI_GLOBAL_VARIABLE, 7, b"1")
    second = EfiVariable("b", EFI_GLOBAL_VARIABLE, 7, b"2")
    records = (VariableRecord(0, VAR_ADDED, second), VariableRecord(4, 0x3E, first))
    assert live_variables(records) == (second, first)
    assert find_variable(records, "a", EFI_GLOBAL_VARIABLE) == first


# --- the firmware volume and the variable store headers ------------------------------------

def test_a_file_shorter_than_both_headers_is_refused() -> None:
    blank = Varstore.empty_4m().to_bytes()
    _refused(blank[:0x63], "varstore: 99 bytes is too small")
    # 0x64 bytes hold both headers; this one is then refused for its FvLength.
    _refused(blank[:0x64], "varstore: firmware volume header length, checksum or size is bad")


def test_the_firmware_volume_signature_and_guid() -> None:
    blank = Varstore.empty_4m().to_bytes()
    message = "varstore: no EFI_SYSTEM_NV_DATA firmware volume header (_FVH)"
    _refused(_put(blank, 0x28, b"_FVX"), message)
    _refused(_put(blank, 0x10, EFI_AUTHENTICATED_VARIABLE.to_bytes()), message)
    assert blank[0x10:0x20] == EFI_SYSTEM_NV_DATA_FV.to_bytes()


def test_the_firmware_volume_header_length_checksum_and_size() -> None:
    blank = Varstore.empty_4m().to_bytes()
    message = "varstore: firmware volume header length, checksum or size is bad"
    _refused(_refit_checksum(_put(blank, 0x30, (0x50).to_bytes(2, "little"))), message)
    _refused(_put(blank, 0x32, b"\0\0"), message)
    _refused(blank[:-1], message)   # FvLength 0x84000 is more than the file
    # The checksum refit alone keeps the header good.
    assert Varstore.parse(_refit_checksum(blank)).to_bytes() == blank
    # An FvLength equal to the file is enough.
    shorter = _refit_checksum(_put(blank[:0x50000], 0x20, (0x50000).to_bytes(8, "little")))
    assert Varstore.parse(shorter).store_size == 0x40000 - 0x48


def test_fv_checksum() -> None:
    header = Varstore.empty_4m().to_bytes()[:0x48]
    assert fv_checksum_ok(header)
    assert fv_checksum_ok(bytes(0x48))
    assert not fv_checksum_ok(b"\x01" + bytes(0x47))
    # Words are little-endian 16-bit, summed modulo 0x10000.
    assert fv_checksum_ok(b"\xff\xff\x01\x00")
    assert not fv_checksum_ok(b"\x00\x01\x01\x00")
    assert fv_checksum_ok(b"\x00\x80\x00\x80")


def test_the_variable_store_signature_format_and_state() -> None:
    blank = Varstore.empty_4m().to_bytes()
    _refused(_put(blank, STORE, EFI_SYSTEM_NV_DATA_FV.to_bytes()),
             "varstore: the variable store is not of authenticated variables")
    message = "varstore: the variable store is not formatted and healthy"
    _refused(_put(blank, STORE + 0x14, b"\x5b"), message)
    _refused(_put(blank, STORE + 0x15, b"\xff"), message)
    assert blank[STORE + 0x14 : STORE + 0x16] == b"\x5a\xfe"


@pytest.mark.parametrize("size", [0, 0x1B, 0x84000 - 0x48 + 1, 0xFFFFFFFF])
def test_a_variable_store_size_out_of_range_is_refused(size: int) -> None:
    blank = Varstore.empty_4m().to_bytes()
    _refused(_put(blank, STORE + 0x10, size.to_bytes(4, "little")),
             f"varstore: variable store size {size:#x} is out of range")


@pytest.mark.parametrize("size", [0x1C, 0x84000 - 0x48])
def test_the_variable_store_size_limits_are_accepted(size: int) -> None:
    blank = Varstore.empty_4m().to_bytes()
    store = Varstore.parse(_put(blank, STORE + 0x10, size.to_bytes(4, "little")))
    assert store.store_size == size and store.store_offset == 0x48 and store.records == ()


# --- records --------------------------------------------------------------------------------

def _one_record() -> bytes:
    return Varstore.empty_4m().set(EfiVariable("ab", EFI_GLOBAL_VARIABLE, 7, b"xyz")).to_bytes()


def test_the_record_layout() -> None:
    stamp = EfiTime(2025, 1, 2, 3, 4, 5)
    variable = EfiVariable("ab", EFI_GLOBAL_VARIABLE, 0x27, b"xyz", stamp, 9)
    data = Varstore.empty_4m().set(variable).to_bytes()
    header = AUTHENTICATED_VARIABLE_HEADER.unpack(
        data[FIRST_RECORD : FIRST_RECORD + AUTHENTICATED_VARIABLE_HEADER.size])
    assert header == {
        "start_id": 0x55AA, "state": 0x3F, "reserved": 0, "attributes": 0x27,
        "monotonic_count": 9, "timestamp": stamp.to_bytes(), "pub_key_index": 0,
        "name_size": 6, "data_size": 3, "vendor_guid": EFI_GLOBAL_VARIABLE.to_bytes(),
    }
    body = FIRST_RECORD + 0x3C
    assert data[body : body + 9] == "ab".encode("utf-16-le") + b"\0\0" + b"xyz"
    # Padded with 0xFF to four bytes, then the erased store.
    assert data[body + 9 : body + 12] == b"\xff" * 3
    assert data[body + 12 : body + 14] == b"\xff\xff"
    (record,) = Varstore.parse(data).records
    assert record == VariableRecord(FIRST_RECORD, 0x3F, variable, 0)


def test_records_are_four_byte_aligned() -> None:
    assert [align4(n) for n in (0, 1, 2, 3, 4, 5, 8)] == [0, 4, 4, 4, 4, 8, 8]
    items = [EfiVariable(n, EFI_GLOBAL_VARIABLE, 7, b"x" * k) for n, k in
             (("a", 0), ("b", 1), ("c", 4), ("d", 5))]
    store = Varstore.empty_4m().with_variables(items)
    offsets = [r.offset for r in store.records]
    assert offsets[0] == FIRST_RECORD
    assert [b - a for a, b in itertools.pairwise(offsets)] == [64, 68, 68]
    assert store.variables == tuple(items)


def test_the_public_key_index_is_read() -> None:
    data = bytearray(_one_record())
    data[FIRST_RECORD + 0x20] = 5
    assert Varstore.parse(bytes(data)).records[0].pub_key_index == 5


def test_the_list_ends_at_the_first_header_without_the_start_id() -> None:
    store = Varstore.empty_4m().with_variables([OLD_DBX, NEW_DBX])
    data = bytearray(store.to_bytes())
    data[store.records[1].offset] = 0xAB
    assert Varstore.parse(bytes(data)).variables == (OLD_DBX,)
    data[FIRST_RECORD + 1] = 0x56
    assert Varstore.parse(bytes(data)).records == ()


def test_a_record_whose_data_overruns_the_store_is_refused() -> None:
    data = _one_record()
    store_end = 0x40000
    # name 6 bytes, data as long as reaches exactly the store's end: accepted.
    fits = store_end - (FIRST_RECORD + 0x3C + 6)
    good = _put(data, FIRST_RECORD + 0x28, fits.to_bytes(4, "little"))
    assert len(Varstore.parse(good).records[0].variable.data) == fits
    bad = _put(data, FIRST_RECORD + 0x28, (fits + 1).to_bytes(4, "little"))
    _refused(bad, f"varstore: variable record at {FIRST_RECORD:#x} overruns the store")
    bad = _put(data, FIRST_RECORD + 0x24, (fits + 7).to_bytes(4, "little"))
    _refused(bad, f"varstore: variable record at {FIRST_RECORD:#x} overruns the store")


def test_a_record_with_an_odd_name_size_is_refused() -> None:
    data = _put(_one_record(), FIRST_RECORD + 0x24, (5).to_bytes(4, "little"))
    _refused(data, f"varstore: variable record at {FIRST_RECORD:#x} overruns the store")


def test_a_record_header_must_fit_before_the_store_end() -> None:
    # A store so small that a header does not fit after its own header holds no record.
    data = _one_record()
    small = _put(data, STORE + 0x10, (0x1C + 0x3B).to_bytes(4, "little"))
    assert Varstore.parse(small).records == ()
    # Room for the header alone: it is read, and its name and data overrun the store.
    small = _put(data, STORE + 0x10, (0x1C + 0x3C).to_bytes(4, "little"))
    _refused(small, f"varstore: variable record at {FIRST_RECORD:#x} overruns the store")
    exact = _put(data, STORE + 0x10, (0x1C + 0x3C + 9).to_bytes(4, "little"))
    assert Varstore.parse(exact).variables[0].data == b"xyz"


def test_a_record_timestamp_is_read_without_the_authenticated_rule() -> None:
    stamp = EfiTime(2025, 1, 2, nanosecond=7, time_zone=60, daylight=1)
    variable = EfiVariable("t", EFI_GLOBAL_VARIABLE, 7, b"", stamp)
    assert Varstore.empty_4m().set(variable).get("t") == variable


# --- writing --------------------------------------------------------------------------------

def test_the_store_is_filled_up_to_its_last_byte_and_not_one_more() -> None:
    room = 0x40000 - FIRST_RECORD
    name_and_header = 0x3C + 4   # "a" and its NUL
    fits = EfiVariable("a", EFI_GLOBAL_VARIABLE, 7, bytes(room - name_and_header))
    store = Varstore.empty_4m().set(fits)
    assert store.get("a") == fits
    too_big = EfiVariable("a", EFI_GLOBAL_VARIABLE, 7, bytes(room - name_and_header + 1))
    with pytest.raises(UsageError) as caught:
        Varstore.empty_4m().set(too_big)
    assert str(caught.value) == (
        f"varstore: {align4(room + 1)} bytes of variables do not fit the {room}-byte store")


def test_rewriting_erases_what_the_store_held_before() -> None:
    full = Varstore.empty_4m().with_variables([OLD_DBX, NEW_DBX])
    emptied = full.with_variables([])
    assert emptied.to_bytes() == Varstore.empty_4m().to_bytes()
    assert emptied.to_bytes()[FIRST_RECORD:0x40000] == b"\xff" * (0x40000 - FIRST_RECORD)


def test_set_replaces_the_variable_of_that_name_and_vendor_only() -> None:
    other = EfiVariable("dbx", EFI_GLOBAL_VARIABLE, 7, b"other vendor")
    store = Varstore.empty_4m().with_variables([OLD_DBX, other]).set(NEW_DBX)
    assert store.variables == (other, NEW_DBX)


def test_the_blank_4m_store() -> None:
    blank = Varstore.empty_4m()
    data = blank.to_bytes()
    assert len(data) == 0x84000 and blank.store_offset == 0x48
    assert blank.store_size == 0x40000 - 0x48
    fv = FIRMWARE_VOLUME_HEADER.unpack(data[:0x48])
    assert (fv["attributes"], fv["revision"], fv["num_blocks"], fv["block_length"]) == (
        0x4FEFF, 2, 0x84, 0x1000)
    assert fv["zero_vector"] == bytes(16) and fv["ext_header_offset"] == 0
    assert data[0x64:0x41000] == b"\xff" * (0x41000 - 0x64)
    working = data[0x41000:0x41020]
    assert working[:16] == EDKII_WORKING_BLOCK_SIGNATURE.to_bytes()
    assert working[0x14] == 0xFE and working[0x15:0x18] == b"\xff" * 3
    assert int.from_bytes(working[0x18:0x20], "little") == 0x1000 - 0x20
    # The CRC covers the header with the CRC field and the state erased.
    unsigned = working[:0x10] + b"\xff" * 4 + b"\xff" + working[0x15:]
    assert int.from_bytes(working[0x10:0x14], "little") == zlib.crc32(unsigned)
    assert data[0x41020:] == b"\xff" * (0x84000 - 0x41020)
