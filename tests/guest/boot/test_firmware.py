"""The firmware stage: boot attempts, boot variables, firmware volumes, GPT, ESP lookups."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest

from cvm.errors import FormatError, StateError, UsageError
from cvm.formats.tcg.device_path import DevicePath
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.firmware_blob import FirmwareBlob
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.uefi.guids import EFI_GLOBAL_VARIABLE
from cvm.formats.uefi.variable import EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import Firmware, FirmwareSettings, GptDisk
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.wire import Guid

DISK_GUID = Guid.parse("7e5a1b3c-2d4f-4a6b-8c9d-0e1f2a3b4c5d")
PART_GUID = Guid.parse("1c2b3a49-5867-4e8d-9a0b-c1d2e3f40516")
ESP_TYPE = Guid.parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")


def _disk(slot: int = 0, count: int = 128) -> bytes:
    """A 4 MiB disk with a GPT holding one ESP at LBA 2048 in entry ``slot``."""
    entry = (ESP_TYPE.to_bytes() + PART_GUID.to_bytes() + struct.pack("<QQQ", 2048, 8191, 0)
             + "ESP".encode("utf-16-le").ljust(72, b"\0"))
    entries = bytes(128 * slot) + entry + bytes(128 * (127 - slot))
    header = bytearray(struct.pack(
        "<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, 1, 8191, 34, 8158,
        DISK_GUID.to_bytes(), 2, count, 128, zlib.crc32(entries)))
    header[16:20] = struct.pack("<I", zlib.crc32(bytes(header)))
    disk = bytearray(4 << 20)
    disk[512 : 512 + 92] = header
    disk[1024 : 1024 + len(entries)] = entries
    return bytes(disk)


def _firmware(varstore: Varstore, files: dict[str, bytes], disk: GptDisk | None = None,
              settings: FirmwareSettings | None = None) -> Firmware:
    boot = MeasuredBoot(SoftwarePcrBank(("sha256",)))
    return Firmware(boot, varstore, EspFiles(files), disk, settings)


def test_gpt_disk_and_hard_drive_node() -> None:
    disk = GptDisk.from_disk(_disk())
    assert len(disk.gpt.partitions) == 1
    assert disk.gpt.disk_guid() == DISK_GUID
    node = DevicePath((disk.hard_drive_node(),))
    assert node.to_text() == f"HD(1,GPT,{PART_GUID},0x800,0x1800)"
    with pytest.raises(FormatError):
        GptDisk.from_disk(bytes(4096))
    with pytest.raises(FormatError, match="partition 2"):
        GptDisk.from_disk(_disk(), 2)
    second = GptDisk.from_disk(_disk(slot=1), 2)
    assert len(second.gpt.partitions) == 1
    assert DevicePath((second.hard_drive_node(),)).to_text().startswith("HD(2,GPT,")
    with pytest.raises(FormatError, match="does not fit"):
        GptDisk.from_disk(_disk(count=0x7FFFFFFF))


def test_boot_attempts_variables_and_volumes(small_kernel: bytes) -> None:
    option = b"\x01\x00\x00\x00\x04\x00" + "cvm\0".encode("utf-16-le") + b"\x7f\xff\x04\x00"
    store = Varstore.empty_4m()
    for name, data in (("BootOrder", b"\x01\x00\x00\x00"), ("Boot0001", option)):
        store = store.set(EfiVariable(name, EFI_GLOBAL_VARIABLE, 7, data))
    settings = FirmwareSettings(crtm_version="1.0", firmware_volumes=((0x820000, b"FV" * 9),),
                                failed_boot_attempts=2)
    firmware = _firmware(store, {"/EFI/BOOT/BOOTX64.EFI": small_kernel},
                         GptDisk.from_disk(_disk()), settings)
    firmware.power_on()
    firmware.boot_from_disk()
    firmware.exit_boot_services()
    events = firmware.boot.events
    pcr1 = [e for e in events if e.pcr_index == 1 and e.event_type != EventType.EV_SEPARATOR]
    assert [e.digest(0x000B) for e in pcr1] == [hashlib.sha256(b"\x01\x00\x00\x00").digest(),
                                                hashlib.sha256(option).digest()]
    blob = next(e for e in events if e.event_type == EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB)
    assert FirmwareBlob.parse(blob.event) == FirmwareBlob(0x820000, 18)
    assert blob.digest(0x000B) == hashlib.sha256(b"FV" * 9).digest()
    actions = [e.event.decode() for e in events if e.event_type == EventType.EV_EFI_ACTION]
    calling, returning = ("Calling EFI Application from Boot Option",
                          "Returning from EFI Application from Boot Option")
    assert actions == [calling, returning, calling, returning, calling,
                       "Exit Boot Services Invocation", "Exit Boot Services Returned with Success"]
    image = next(e for e in events if e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION)
    load = UefiImageLoadEvent.parse(image.event)
    assert load.device_path.to_text().startswith("PciRoot(0x0)/Pci(0x2,0x0)/HD(1,GPT,")
    assert load.device_path.to_text().endswith(r"/\EFI\BOOT\BOOTX64.EFI")
    assert load.image_length == len(small_kernel)
    assert sum(e.event_type == EventType.EV_EFI_GPT_EVENT for e in events) == 1


def test_esp_files_are_case_insensitive() -> None:
    esp = EspFiles({"/EFI/BOOT/BOOTX64.EFI": b"x", "vmlinuz": b"k"})
    assert esp[r"\efi\boot\bootx64.efi"] == b"x"
    assert "/VMLINUZ" in esp
    assert esp.is_directory("/efi") and not esp.is_directory("/boot")
    assert sorted(esp) == ["/EFI/BOOT/BOOTX64.EFI", "/vmlinuz"]
    with pytest.raises(StateError, match="not found"):
        esp.read("/nothing")
    with pytest.raises(UsageError):
        EspFiles({"/a": b"", "/A": b""})
    with pytest.raises(UsageError):
        EspFiles({"/../a": b""})
