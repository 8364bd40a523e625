"""UEFI_IMAGE_LOAD_EVENT and TCG_PCClientTaggedEvent (PFP 1.05 r23 §10.4) field by field: the
name of the field a cut record ends in, the stray bytes some shims logged, the text of a
tagged event (printable ASCII, one final NUL), what ``cvm eventlog`` shows and writes as JSON,
and the names of event types, known or not."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.formats.tcg.device_path import DevicePath
from cvm.formats.tcg.event_type import EventType, event_type_name
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.tagged_event import LINUX_INITRD_EVENT_TAG_ID, TaggedEvent

PATH = DevicePath.file_path("\\EFI\\BOOT\\BOOTX64.EFI")
IMAGE = UefiImageLoadEvent(0x7E00_0000, 0x1_2345, 0x1000, PATH)
RECORD = IMAGE.to_bytes()


def test_an_image_load_event_is_four_u64_then_the_path() -> None:
    path = PATH.to_bytes()
    assert IMAGE.to_bytes() == (b"".join(v.to_bytes(8, "little") for v in
                                         (0x7E00_0000, 0x1_2345, 0x1000, len(path))) + path)
    assert UefiImageLoadEvent.parse(RECORD) == IMAGE
    stray = UefiImageLoadEvent.parse(RECORD + b"\0\0\0")
    assert stray.trailing == b"\0\0\0" and stray.to_bytes() == RECORD + b"\0\0\0"


@pytest.mark.parametrize(("cut", "message"), [
    (3, "ImageLocationInMemory needs 8 bytes at offset 0x0, only 3 left"),
    (12, "ImageLengthInMemory needs 8 bytes at offset 0x8, only 4 left"),
    (16, "ImageLinkTimeAddress needs 8 bytes at offset 0x10, only 0 left"),
    (30, "LengthOfDevicePath needs 8 bytes at offset 0x18, only 6 left"),
    (40, f"DevicePath needs {len(PATH.to_bytes())} bytes at offset 0x20, only 8 left"),
])
def test_a_cut_image_load_event_names_its_field(cut: int, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        UefiImageLoadEvent.parse(RECORD[:cut])
    assert str(caught.value) == f"UEFI_IMAGE_LOAD_EVENT: {message}"


def test_an_image_load_event_is_described_and_written_as_json() -> None:
    assert IMAGE.describe() == f"{PATH.to_text()} at 0x7e000000, 74565 bytes"
    stray = UefiImageLoadEvent(0x10, 2, 0, DevicePath(()), b"\0\0\0")
    assert stray.describe() == "(no device path) at 0x10, 2 bytes (+3 stray bytes)"
    assert IMAGE.to_json() == {
        "kind": "UEFI_IMAGE_LOAD_EVENT", "image_location": 0x7E00_0000,
        "image_length": 0x1_2345, "link_time_address": 0x1000, "device_path": PATH.to_text(),
        "device_path_bytes": PATH.to_bytes().hex(), "trailing": ""}
    assert stray.to_json()["trailing"] == "000000"
    assert stray.to_json()["device_path"] == ""


def test_a_tagged_event_is_id_size_data() -> None:
    event = TaggedEvent(LINUX_INITRD_EVENT_TAG_ID, b"Linux initrd\0")
    data = event.to_bytes()
    assert data == bytes.fromhex("ec223b8f") + (13).to_bytes(4, "little") + b"Linux initrd\0"
    assert TaggedEvent.parse(data) == event


@pytest.mark.parametrize(("data", "message"), [
    (b"\xec\x22", "taggedEventID needs 4 bytes at offset 0x0, only 2 left"),
    (b"\xec\x22\x3b\x8f\x05", "taggedEventDataSize needs 4 bytes at offset 0x4, only 1 left"),
    (b"\x01\0\0\0\x05\0\0\0abc", "taggedEventData needs 5 bytes at offset 0x8, only 3 left"),
    (b"\x01\0\0\0\x02\0\0\0abc", "1 unexpected trailing bytes at offset 0xa"),
])
def test_a_malformed_tagged_event_names_its_field(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        TaggedEvent.parse(data)
    assert str(caught.value) == f"TCG_PCClientTaggedEvent: {message}"


@pytest.mark.parametrize(("data", "text"), [
    (b"Linux initrd\0", "Linux initrd"), (b"ab", "ab"), (b" ~", " ~"), (b"a\0", "a"),
    (b"", None), (b"\0", None), (b"ab\0\0", None), (b"a\x7f", None), (b"a\x1f", None),
    (b"\xc3\xa9", None), (b"a\0b", None),
])
def test_the_text_of_a_tagged_event(data: bytes, text: str | None) -> None:
    assert TaggedEvent(1, data).text() == text


def test_a_tagged_event_is_described_and_written_as_json() -> None:
    text = TaggedEvent(LINUX_INITRD_EVENT_TAG_ID, b"Linux initrd\0")
    blob = TaggedEvent(0x8F3B22ED, b"\x01\x02\x03")
    assert text.describe() == "tag 0x8f3b22ec 'Linux initrd'"
    assert blob.describe() == "tag 0x8f3b22ed 3 bytes"
    assert text.to_json() == {"kind": "TCG_PCClientTaggedEvent", "tagged_event_id": 0x8F3B22EC,
                              "text": "Linux initrd", "data": b"Linux initrd\0".hex()}
    assert blob.to_json() == {"kind": "TCG_PCClientTaggedEvent", "tagged_event_id": 0x8F3B22ED,
                              "text": None, "data": "010203"}


def test_event_type_names() -> None:
    assert event_type_name(0x80000003) == "EV_EFI_BOOT_SERVICES_APPLICATION"
    assert event_type_name(EventType.EV_PREBOOT_CERT) == "EV_PREBOOT_CERT"
    assert event_type_name(0x1234) == "EV_UNKNOWN_0x00001234"
    assert event_type_name(0x800000E5) == "EV_UNKNOWN_0x800000e5"
