"""Decoding a record's event data by its type (PFP 1.05 r23 Tables 9 and 10), check by check:
which structure each type decodes to, the error naming the event type when the data does not
fit, free-form text against bytes, the separator, and what is shown of each."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.formats.tcg.event_data import (
    MalformedEvent,
    SeparatorEvent,
    SpecIdHeader,
    StringEvent,
    UnknownEvent,
    decode_event_data,
    decode_or_malformed,
)
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.firmware_blob import FirmwareBlob, HandoffTables
from cvm.formats.tcg.gpt_data import UefiGptData
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.no_action import LegacySpecIdEvent, Sp800155Event, StartupLocalityEvent
from cvm.formats.tcg.spec_id_event import AlgorithmSize, SpecIdEvent
from cvm.formats.tcg.tagged_event import TaggedEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.wire import Guid

GUID = Guid.parse("8be4df61-93ca-11d2-aa0d-00e098032b8c")
SPEC = SpecIdEvent((AlgorithmSize(0x0004, 20), AlgorithmSize(0x000B, 32)), vendor_info=b"v")
BLOB = (0x1000).to_bytes(8, "little") + (0x20).to_bytes(8, "little")


@pytest.mark.parametrize(("text", "shown"), [
    (b"GRUB", "GRUB"), (b"GRUB\0", "GRUB"), (b"a\tb\r\n", "a\tb\r\n"), (b"", ""),
    ("Linux\0".encode("utf-16-le"), "Linux"), ("ab".encode("utf-16-le"), "ab"),
    (b"\0", ""), (b"\0\0", ""), ("é\0".encode("utf-16-le"), "é"),
])
def test_free_form_text(text: bytes, shown: str) -> None:
    event = StringEvent(text)
    assert event.text() == shown
    assert event.describe() == repr(shown)
    assert event.to_json() == {"kind": "string", "text": shown, "data": text.hex()}
    assert event.to_bytes() == text


@pytest.mark.parametrize("data", [
    b"a\0b", b"\x01\x02\x03", b"\xff", b"\xff\xfe\xfd", "a\0b".encode("utf-16-le"),
    b"\x00\xd8", "\x01".encode("utf-16-le"), b"\0\0\xff\0",
])
def test_bytes_that_are_not_text(data: bytes) -> None:
    event = StringEvent(data)
    assert event.text() is None
    assert event.describe() == f"{len(data)} bytes {data.hex()}"
    assert event.to_json() == {"kind": "string", "text": None, "data": data.hex()}


def test_long_bytes_are_shown_cut_at_32() -> None:
    data = b"\x01\x00" * 16 + b"\x01"  # 33 bytes, neither ASCII nor UTF-16 text
    assert StringEvent(data[:32]).describe() == f"32 bytes {data[:32].hex()}"
    assert StringEvent(data).describe() == f"33 bytes {data[:32].hex()}..."


def test_the_separator() -> None:
    for value, shown in ((0, "separator"), (1, "separator (error)"),
                         (0xFFFFFFFF, "separator 0xffffffff"), (2, "separator 0x00000002")):
        data = value.to_bytes(4, "little")
        event = decode_event_data(EventType.EV_SEPARATOR, data)
        assert event == SeparatorEvent(data) and event.to_bytes() == data
        assert event.describe() == shown
        assert event.to_json() == {"kind": "separator", "value": value}
    for size in (0, 3, 5):
        with pytest.raises(FormatError) as caught:
            decode_event_data(EventType.EV_SEPARATOR, bytes(size))
        assert str(caught.value) == (f"EV_SEPARATOR: EV_SEPARATOR: expected 4 bytes of data, "
                                     f"got {size}")


def test_the_spec_id_header_as_event_data() -> None:
    decoded = decode_event_data(EventType.EV_NO_ACTION, SPEC.to_bytes())
    assert decoded == SpecIdHeader(SPEC) and decoded.to_bytes() == SPEC.to_bytes()
    assert decoded.describe() == "Spec ID Event03, banks 0x0004/20, 0x000b/32"
    assert decoded.to_json() == {
        "kind": "Spec ID Event03", "platform_class": 0, "spec_version": "2.0",
        "spec_errata": 0, "uintn_size": 2,
        "algorithms": [{"alg_id": 4, "digest_size": 20}, {"alg_id": 11, "digest_size": 32}],
        "vendor_info": "76"}


def test_no_action_data_by_signature() -> None:
    decode = decode_event_data
    assert decode(EventType.EV_NO_ACTION, b"StartupLocality\0\x03") == StartupLocalityEvent(3)
    sp = b"SP800-155 Event3" + bytes(20)
    assert isinstance(decode(EventType.EV_NO_ACTION, sp), Sp800155Event)
    sp_old = b"SP800-155 Event\0" + bytes(20)
    assert isinstance(decode(EventType.EV_NO_ACTION, sp_old), Sp800155Event)
    legacy = b"Spec ID Event00\0" + bytes(4) + bytes([2, 1, 0, 2, 0])
    assert isinstance(decode(EventType.EV_NO_ACTION, legacy), LegacySpecIdEvent)
    assert decode(EventType.EV_NO_ACTION, b"free text") == StringEvent(b"free text")
    with pytest.raises(FormatError) as caught:
        decode(EventType.EV_NO_ACTION, b"StartupLocality\0\x07")
    assert str(caught.value) == ("EV_NO_ACTION: StartupLocality event: locality 7 is outside "
                                 "0..4")


def test_post_code_is_a_blob_only_when_16_bytes_that_are_not_text() -> None:
    assert decode_event_data(EventType.EV_POST_CODE, BLOB) == FirmwareBlob(0x1000, 0x20)
    text16 = b"ACPI DATA 16 chr"
    assert decode_event_data(EventType.EV_POST_CODE, text16) == StringEvent(text16)
    assert decode_event_data(EventType.EV_POST_CODE, BLOB[:15]) == StringEvent(BLOB[:15])
    assert decode_event_data(EventType.EV_POST_CODE, BLOB + b"\x80") == StringEvent(BLOB + b"\x80")


def test_each_structured_type_decodes_to_its_structure() -> None:
    decode = decode_event_data
    variable = UefiVariableData(GUID, "SecureBoot", b"\x01")
    for kind in (EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, EventType.EV_EFI_VARIABLE_BOOT,
                 EventType.EV_EFI_VARIABLE_BOOT2, EventType.EV_EFI_VARIABLE_AUTHORITY):
        assert decode(kind, variable.to_bytes()) == variable
    image = bytes(32)
    for kind in (EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
                 EventType.EV_EFI_BOOT_SERVICES_DRIVER, EventType.EV_EFI_RUNTIME_SERVICES_DRIVER):
        assert decode(kind, image) == UefiImageLoadEvent.parse(image)
    tagged = TaggedEvent(0x8F3B22EC, b"initrd")
    assert decode(EventType.EV_EVENT_TAG, tagged.to_bytes()) == tagged
    gpt = bytearray(92)
    gpt[0:8] = b"EFI PART"
    gpt[0x54:0x58] = (128).to_bytes(4, "little")
    gpt_data = bytes(gpt) + bytes(8)
    assert decode(EventType.EV_EFI_GPT_EVENT, gpt_data) == UefiGptData(bytes(gpt), ())
    assert decode(EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, BLOB) == FirmwareBlob(0x1000, 0x20)
    assert decode(EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2, b"\x02fv" + BLOB) == FirmwareBlob(
        0x1000, 0x20, b"fv")
    tables = bytes(8)
    assert decode(EventType.EV_EFI_HANDOFF_TABLES, tables) == HandoffTables(())
    assert decode(EventType.EV_EFI_HANDOFF_TABLES2, b"\x01t" + tables) == HandoffTables((), b"t")
    for kind in (EventType.EV_ACTION, EventType.EV_IPL, EventType.EV_S_CRTM_VERSION,
                 EventType.EV_EFI_ACTION):
        assert decode(kind, b"\xff\x01") == StringEvent(b"\xff\x01")


@pytest.mark.parametrize(("kind", "data", "message"), [
    (EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, BLOB + b"\0",
     "EV_EFI_PLATFORM_FIRMWARE_BLOB: UEFI_PLATFORM_FIRMWARE_BLOB: 1 unexpected trailing bytes "
     "at offset 0x10"),
    (EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2, BLOB,
     "EV_EFI_PLATFORM_FIRMWARE_BLOB2: UEFI_PLATFORM_FIRMWARE_BLOB2: BlobLength needs 8 "
     "bytes at offset 0x9, only 7 left"),
    (EventType.EV_EFI_HANDOFF_TABLES2, b"\0" + bytes(7),
     "EV_EFI_HANDOFF_TABLES2: UEFI_HANDOFF_TABLE_POINTERS2: NumberOfTables needs 8 bytes at "
     "offset 0x1, only 7 left"),
    (EventType.EV_EFI_GPT_EVENT, b"EFI PART",
     "EV_EFI_GPT_EVENT: UEFI_GPT_DATA: UEFIPartitionHeader needs 92 bytes at offset 0x0, "
     "only 8 left"),
    (EventType.EV_EFI_VARIABLE_BOOT, bytes(20),
     "UEFI_VARIABLE_DATA: UnicodeNameLength needs 8 bytes at offset 0x10, only 4 left"),
])
def test_data_that_does_not_fit_its_type_names_it(kind: int, data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        decode_event_data(kind, data)
    assert str(caught.value) == message
    malformed = decode_or_malformed(kind, data)
    assert malformed == MalformedEvent(kind, data, message)
    assert malformed.to_bytes() == data
    assert malformed.describe() == f"malformed ({message}): {len(data)} bytes {data[:32].hex()}"
    assert malformed.to_json() == {"kind": "malformed", "problem": message, "data": data.hex()}


def test_malformed_data_is_shown_cut_at_32_bytes() -> None:
    data = bytes(33)
    shown = MalformedEvent(EventType.EV_SEPARATOR, data, "why").describe()
    assert shown == f"malformed (why): 33 bytes {bytes(32).hex()}..."
    assert decode_or_malformed(EventType.EV_SEPARATOR, bytes(4)) == SeparatorEvent(bytes(4))


def test_a_type_no_table_defines() -> None:
    decoded = decode_event_data(0x12345678, b"\x01\x02")
    assert decoded == UnknownEvent(0x12345678, b"\x01\x02")
    assert decoded.to_bytes() == b"\x01\x02"
    assert decoded.describe() == "unknown event type 0x12345678, 2 bytes"
    assert decoded.to_json() == {"kind": "unknown", "event_type": 0x12345678, "data": "0102"}


def test_malformed_data_of_exactly_32_bytes_is_shown_whole() -> None:
    data = bytes(range(32))
    shown = MalformedEvent(EventType.EV_SEPARATOR, data, "why").describe()
    assert shown == f"malformed (why): 32 bytes {data.hex()}"
