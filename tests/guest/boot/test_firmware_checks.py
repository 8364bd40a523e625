"""The firmware stage, decision by decision: when Secure Boot is on, which variables PCR 7
holds, how the boot disk's GPT is read and refused, what each boot attempt, image load and
ExitBootServices measure, and where images are placed."""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Any

import pytest

from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate
from cvm.errors import FormatError, PolicyError, StateError
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.tcg.device_path import END_NODE, MEDIA, DevicePath, DevicePathNode
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.firmware_blob import FirmwareBlob
from cvm.formats.tcg.gpt_data import UefiGptData
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.formats.uefi.guids import EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE
from cvm.formats.uefi.signature_list import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    SignatureDatabase,
    SignatureList,
)
from cvm.formats.uefi.variable import EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import (
    IMAGE_TOP_ADDRESS,
    OVMF_MODEL_CRTM_VERSION,
    VIRTIO_DISK_PATH,
    Firmware,
    FirmwareSettings,
    GptDisk,
    ovmf_model_settings,
    policy_variables,
    secure_boot_enabled,
    security_database,
    variable_data,
)
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.guest.boot.secureboot import Decision
from cvm.image.signing import sign_pe
from cvm.wire import Guid

SHA1, SHA256 = 0x0004, 0x000B
OWNER = Guid.parse("0e0f0a0b-1c1d-4e4f-8a8b-9c9d0e0f1a1b")
DISK_GUID = Guid.parse("7e5a1b3c-2d4f-4a6b-8c9d-0e1f2a3b4c5d")
ESP_TYPE = Guid.parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
LOADER = "/EFI/BOOT/BOOTX64.EFI"


def _entry(unique: int, first: int, last: int) -> bytes:
    return (ESP_TYPE.to_bytes() + unique.to_bytes(16, "little")
            + struct.pack("<QQQ", first, last, 0) + "ESP".encode("utf-16-le").ljust(72, b"\0"))


def _disk(entries: list[bytes], count: int = 4, entry_size: int = 128, size: int = 64 << 10,
          signature: bytes = b"EFI PART") -> bytes:
    """A small disk whose GPT header at LBA 1 points at ``count`` entries from LBA 2."""
    table = b"".join(e.ljust(entry_size, b"\0") for e in entries).ljust(count * entry_size, b"\0")
    header = bytearray(struct.pack(
        "<8sIIIIQQQQ16sQIII", signature, 0x10000, 92, 0, 0, 1, 127, 34, 100,
        DISK_GUID.to_bytes(), 2, count, entry_size, zlib.crc32(table)))
    header[16:20] = struct.pack("<I", zlib.crc32(bytes(header)))
    disk = bytearray(size)
    disk[512 : 512 + 92] = header
    disk[1024 : 1024 + min(len(table), size - 1024)] = table[: size - 1024]
    return bytes(disk)


def _store(*variables: tuple[str, Guid, bytes]) -> Varstore:
    store = Varstore.empty_4m()
    for name, vendor, data in variables:
        store = store.set(EfiVariable(name, vendor, 0x27, data))
    return store


def _firmware(store: Varstore, files: dict[str, bytes] | None = None,
              disk: GptDisk | None = None,
              settings: FirmwareSettings | None = None) -> Firmware:
    boot = MeasuredBoot(SoftwarePcrBank(("sha1", "sha256")))
    return Firmware(boot, store, EspFiles(files or {}), disk, settings)


def _summary(events: tuple[PcrEvent, ...]) -> list[tuple[int, EventType]]:
    return [(e.pcr_index, EventType(e.event_type)) for e in events]


# --- the Secure Boot state and its variables ------------------------------------------------


def test_secure_boot_needs_a_pk_and_no_secure_boot_enable_of_zero() -> None:
    pk = ("PK", EFI_GLOBAL_VARIABLE, b"pk")
    assert not secure_boot_enabled(Varstore.empty_4m())
    assert secure_boot_enabled(_store(pk))
    assert not secure_boot_enabled(_store(("PK", EFI_GLOBAL_VARIABLE, b"")))
    assert not secure_boot_enabled(_store(("PK", OWNER, b"pk")))  # not the global PK
    assert not secure_boot_enabled(_store(pk, ("SecureBootEnable", OWNER, b"\0")))
    assert secure_boot_enabled(_store(pk, ("SecureBootEnable", OWNER, b"\x01")))
    assert not secure_boot_enabled(_store(("SecureBootEnable", OWNER, b"\x01")))
    firmware = _firmware(_store(pk))
    assert firmware.secure_boot
    assert firmware.variable_data("PK", EFI_GLOBAL_VARIABLE) == b"pk"


def test_variable_data_and_databases_of_absent_variables_are_empty() -> None:
    store = _store(("db", EFI_GLOBAL_VARIABLE, b"wrong vendor"))
    assert variable_data(store, "db", EFI_IMAGE_SECURITY_DATABASE) == b""
    assert variable_data(store, "db", EFI_GLOBAL_VARIABLE) == b"wrong vendor"
    assert len(security_database(Varstore.empty_4m(), "db")) == 0
    assert len(security_database(store, "db")) == 0  # db under the global GUID is not db
    assert _firmware(store).variable_data("db", EFI_IMAGE_SECURITY_DATABASE) == b""
    esl = SignatureDatabase((SignatureList.of(EFI_CERT_X509, OWNER, b"\x30\x00"),))
    store = _store(("dbx", EFI_IMAGE_SECURITY_DATABASE, esl.to_bytes()))
    assert security_database(store, "dbx") == esl
    assert _firmware(store).database("dbx") == esl


def test_dbt_and_dbr_follow_dbx_only_when_present() -> None:
    base = [("PK", EFI_GLOBAL_VARIABLE), ("KEK", EFI_GLOBAL_VARIABLE),
            ("db", EFI_IMAGE_SECURITY_DATABASE), ("dbx", EFI_IMAGE_SECURITY_DATABASE)]
    assert list(policy_variables(Varstore.empty_4m())) == base
    dbr = ("dbr", EFI_IMAGE_SECURITY_DATABASE)
    assert list(policy_variables(_store((*dbr, b"")))) == [*base, dbr]
    both = _store((*dbr, b""), ("dbt", EFI_IMAGE_SECURITY_DATABASE, b""))
    assert list(policy_variables(both)) == [*base, ("dbt", EFI_IMAGE_SECURITY_DATABASE), dbr]
    assert list(policy_variables(_store(("dbt", OWNER, b"")))) == base


# --- power on: PCR 0 and PCR 7 ---------------------------------------------------------------


def test_power_on_measures_the_crtm_volumes_and_the_policy() -> None:
    settings = FirmwareSettings(crtm_version="v1", firmware_volumes=(
        (0xFFC00000, b"first"), (0xFFE00000, b"second")))
    firmware = _firmware(_store(("PK", EFI_GLOBAL_VARIABLE, b"pk"),
                                ("db", EFI_IMAGE_SECURITY_DATABASE, b"dbdata")), settings=settings)
    firmware.power_on()
    events = firmware.boot.events
    assert _summary(events) == [
        (0, EventType.EV_S_CRTM_VERSION), (0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB),
        (0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB),
        *[(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG)] * 5, (7, EventType.EV_SEPARATOR)]
    assert events[0].event == "v1\0".encode("utf-16-le")
    assert events[0].digest(SHA256) == hashlib.sha256(events[0].event).digest()
    for event, (base, volume) in zip(events[1:3], settings.firmware_volumes, strict=True):
        assert FirmwareBlob.parse(event.event) == FirmwareBlob(base, len(volume))
        assert event.digest(SHA1) == hashlib.sha1(volume).digest()
    variables = [UefiVariableData.parse(e.event) for e in events[3:8]]
    assert [(v.vendor_guid, v.name, v.data) for v in variables] == [
        (EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01"), (EFI_GLOBAL_VARIABLE, "PK", b"pk"),
        (EFI_GLOBAL_VARIABLE, "KEK", b""), (EFI_IMAGE_SECURITY_DATABASE, "db", b"dbdata"),
        (EFI_IMAGE_SECURITY_DATABASE, "dbx", b"")]
    for event in events[3:8]:
        assert event.digest(SHA256) == hashlib.sha256(event.event).digest()
    assert events[8].event == b"\0\0\0\0"


def test_power_on_measures_policy_variables_under_their_own_vendor() -> None:
    firmware = _firmware(_store(("KEK", OWNER, b"not the KEK")))
    firmware.power_on()
    kek = UefiVariableData.parse(firmware.boot.events[3].event)
    assert (kek.name, kek.data) == ("KEK", b"")


def test_power_on_with_secure_boot_off_measures_zero() -> None:
    firmware = _firmware(Varstore.empty_4m())
    firmware.power_on()
    first = firmware.boot.events[0]
    assert first.event == "\0".encode("utf-16-le")
    secure_boot = UefiVariableData.parse(firmware.boot.events[1].event)
    assert (secure_boot.name, secure_boot.data) == ("SecureBoot", b"\0")


def test_the_ovmf_models_own_settings() -> None:
    ovmf = bytes(range(256)) * 16
    settings = ovmf_model_settings(ovmf)
    assert settings.crtm_version == OVMF_MODEL_CRTM_VERSION == "cvm OVMF model 1.0"
    assert settings.firmware_volumes == (((1 << 32) - len(ovmf), ovmf),)
    assert settings.failed_boot_attempts == 0 and settings.disk_path == VIRTIO_DISK_PATH


# --- boot attempts and boot variables --------------------------------------------------------


def test_the_first_attempt_measures_the_boot_variables_and_the_separators() -> None:
    store = _store(("BootOrder", EFI_GLOBAL_VARIABLE, bytes([0x0A, 0, 2, 0, 3])),
                   ("Boot000A", EFI_GLOBAL_VARIABLE, b"ten"),
                   ("Boot0003", EFI_GLOBAL_VARIABLE, b"three"))
    firmware = _firmware(store)
    firmware.ready_to_boot()
    events = firmware.boot.events
    # BootOrder, then Boot000A; Boot0002 is absent and the odd last byte names nothing.
    assert _summary(events) == [
        (1, EventType.EV_EFI_VARIABLE_BOOT), (1, EventType.EV_EFI_VARIABLE_BOOT),
        (4, EventType.EV_EFI_ACTION), *[(pcr, EventType.EV_SEPARATOR) for pcr in range(7)]]
    names = [UefiVariableData.parse(e.event) for e in events[:2]]
    assert [(v.vendor_guid, v.name, v.data) for v in names] == [
        (EFI_GLOBAL_VARIABLE, "BootOrder", bytes([0x0A, 0, 2, 0, 3])),
        (EFI_GLOBAL_VARIABLE, "Boot000A", b"ten")]
    assert events[1].digest(SHA256) == hashlib.sha256(b"ten").digest()
    assert events[2].event == b"Calling EFI Application from Boot Option"
    firmware.ready_to_boot()
    later = firmware.boot.events[len(events):]
    assert [e.event for e in later] == [b"Returning from EFI Application from Boot Option",
                                        b"Calling EFI Application from Boot Option"]
    assert all(e.pcr_index == 4 for e in later)


def test_without_boot_order_no_boot_variable_is_measured() -> None:
    firmware = _firmware(_store(("Boot0000", EFI_GLOBAL_VARIABLE, b"zero"),
                                ("BootOrder", OWNER, b"\0\0")))
    firmware.ready_to_boot()
    assert EventType.EV_EFI_VARIABLE_BOOT not in [e.event_type for e in firmware.boot.events]


def test_boot_order_of_the_last_entry() -> None:
    store = _store(("BootOrder", EFI_GLOBAL_VARIABLE, bytes([1, 0, 2, 0])),
                   ("Boot0001", EFI_GLOBAL_VARIABLE, b"one"),
                   ("Boot0002", EFI_GLOBAL_VARIABLE, b"two"),
                   ("Boot0002", OWNER, b"other vendor"),
                   ("Boot0200", EFI_GLOBAL_VARIABLE, b"not in the order"),
                   ("BootOrder", OWNER, b"\x03\x00"), ("Boot0003", OWNER, b"other vendor"))
    firmware = _firmware(store)
    firmware.ready_to_boot()
    names = [UefiVariableData.parse(e.event).name for e in firmware.boot.events
             if e.event_type == EventType.EV_EFI_VARIABLE_BOOT]
    assert names == ["BootOrder", "Boot0001", "Boot0002"]
    only_foreign = _firmware(_store(("BootOrder", EFI_GLOBAL_VARIABLE, b"\x03\x00"),
                                    ("Boot0003", OWNER, b"other vendor")))
    only_foreign.ready_to_boot()
    assert [UefiVariableData.parse(e.event).name for e in only_foreign.boot.events
            if e.event_type == EventType.EV_EFI_VARIABLE_BOOT] == ["BootOrder"]


def test_exit_boot_services_measures_two_actions_into_pcr5() -> None:
    firmware = _firmware(Varstore.empty_4m())
    firmware.exit_boot_services()
    assert [(e.pcr_index, e.event) for e in firmware.boot.events] == [
        (5, b"Exit Boot Services Invocation"), (5, b"Exit Boot Services Returned with Success")]


# --- image placement -----------------------------------------------------------------------


@pytest.mark.parametrize(("size", "pages"),
                         [(1, 2), (0xFFF, 2), (0x1000, 2), (0x1001, 3), (0x3000, 4)])
def test_images_are_placed_page_aligned_below_the_previous(size: int, pages: int) -> None:
    firmware = _firmware(Varstore.empty_4m())
    first = firmware.allocate(size)
    assert first == IMAGE_TOP_ADDRESS - pages * 0x1000 + 0x18
    assert firmware.allocate(size) == first - pages * 0x1000


# --- the GPT of the boot disk -----------------------------------------------------------------


def test_the_gpt_keeps_the_used_entries_and_the_booted_one() -> None:
    entries = [_entry(0x11, 40, 59), b"", _entry(0x33, 60, 99)]
    disk = GptDisk.from_disk(_disk(entries), 3)
    assert disk.gpt.header == _disk(entries)[512 : 512 + 92]
    assert disk.gpt.partitions == (_entry(0x11, 40, 59), _entry(0x33, 60, 99))
    assert disk.entry == _entry(0x33, 60, 99)
    assert disk.partition_number == 3
    node = disk.hard_drive_node()
    assert node == DevicePathNode(MEDIA, 0x01, (
        (3).to_bytes(4, "little") + (60).to_bytes(8, "little") + (40).to_bytes(8, "little")
        + (0x33).to_bytes(16, "little") + bytes([2, 2])))
    assert GptDisk.from_disk(_disk(entries)).partition_number == 1


def test_an_entry_size_over_128_is_followed() -> None:
    entries = [_entry(0x11, 40, 59), _entry(0x22, 60, 99)]
    disk = GptDisk.from_disk(_disk(entries, entry_size=256), 2)
    assert disk.entry == _entry(0x22, 60, 99).ljust(256, b"\0")
    assert disk.gpt.partitions[0] == _entry(0x11, 40, 59).ljust(256, b"\0")


@pytest.mark.parametrize(("disk", "number", "message"), [
    (_disk([_entry(1, 40, 59)], signature=b"EFI PARX"), 1, "boot disk: no GPT header at LBA 1"),
    (_disk([_entry(1, 40, 59)], entry_size=127), 1,
     "boot disk: the partition entry array does not fit the disk"),
    (_disk([_entry(1, 40, 59)], count=505, size=1024 + 504 * 128), 1,
     "boot disk: the partition entry array does not fit the disk"),
    (_disk([_entry(1, 40, 59)]), 0, "boot disk: partition 0 is not in use"),
    (_disk([_entry(1, 40, 59)], count=4), 5, "boot disk: partition 5 is not in use"),
    (_disk([_entry(1, 40, 59)]), 2, "boot disk: partition 2 is not in use"),
])
def test_gpt_refusals(disk: bytes, number: int, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        GptDisk.from_disk(disk, number)
    assert str(caught.value) == message


def test_an_entry_with_a_zero_type_guid_is_unused() -> None:
    unused = bytes(16) + _entry(0x44, 40, 59)[16:]
    raw = _disk([unused, _entry(0x11, 60, 99)])
    with pytest.raises(FormatError, match="partition 1 is not in use"):
        GptDisk.from_disk(raw, 1)
    assert GptDisk.from_disk(raw, 2).gpt.partitions == (_entry(0x11, 60, 99),)


def test_an_entry_array_ending_at_the_disks_end_fits() -> None:
    disk = _disk([_entry(1, 40, 59)], count=504, size=1024 + 504 * 128)
    assert len(GptDisk.from_disk(disk).gpt.partitions) == 1
    last = _disk([b""] * 3 + [_entry(4, 40, 59)], count=4)
    assert GptDisk.from_disk(last, 4).entry == _entry(4, 40, 59)


# --- loading images -------------------------------------------------------------------------


def test_a_disk_image_load_measures_gpt_once_and_a_full_device_path(small_kernel: bytes) -> None:
    raw = _disk([_entry(0x11, 40, 59)])
    disk = GptDisk.from_disk(raw)
    firmware = _firmware(Varstore.empty_4m(), {LOADER: small_kernel, "/b.efi": small_kernel},
                         disk)
    assert firmware.load_image() == small_kernel
    assert firmware.load_pe("/b.efi").data == small_kernel
    events = firmware.boot.events
    assert _summary(events) == [(5, EventType.EV_EFI_GPT_EVENT),
                                (4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION),
                                (4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION)]
    assert UefiGptData.parse(events[0].event) == disk.gpt
    assert events[0].digest(SHA256) == hashlib.sha256(disk.gpt.to_bytes()).digest()
    load = UefiImageLoadEvent.parse(events[1].event)
    file_node = DevicePath.file_path(r"\EFI\BOOT\BOOTX64.EFI").nodes[0]
    assert load == UefiImageLoadEvent(
        IMAGE_TOP_ADDRESS - (len(small_kernel) + 0x1FFF) // 0x1000 * 0x1000 + 0x18,
        len(small_kernel), 0,
        DevicePath((*VIRTIO_DISK_PATH, disk.hard_drive_node(), file_node, END_NODE)))
    assert events[1].digest(SHA256) == image_digest(small_kernel, "sha256")
    assert events[1].digest(SHA1) == image_digest(small_kernel, "sha1")
    second = UefiImageLoadEvent.parse(events[2].event)
    assert second.device_path.nodes[-2] == DevicePath.file_path(r"\b.efi").nodes[0]


def test_without_a_disk_no_gpt_and_no_hard_drive_node(small_kernel: bytes) -> None:
    firmware = _firmware(Varstore.empty_4m(), {LOADER: small_kernel})
    firmware.load_image()
    (event,) = firmware.boot.events
    load = UefiImageLoadEvent.parse(event.event)
    assert load.device_path == DevicePath((*VIRTIO_DISK_PATH, DevicePath.file_path(
        r"\EFI\BOOT\BOOTX64.EFI").nodes[0], END_NODE))


def test_failed_attempts_come_before_the_disk_boot(small_kernel: bytes) -> None:
    firmware = _firmware(Varstore.empty_4m(), {LOADER: small_kernel},
                         settings=FirmwareSettings(failed_boot_attempts=1))
    assert firmware.boot_from_disk() == small_kernel
    actions = [e.event for e in firmware.boot.events if e.event_type == EventType.EV_EFI_ACTION]
    assert actions == [b"Calling EFI Application from Boot Option",
                       b"Returning from EFI Application from Boot Option",
                       b"Calling EFI Application from Boot Option"]
    assert firmware.boot.events[-1].event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION


def test_a_buffer_load_has_no_device_path(small_kernel: bytes) -> None:
    firmware = _firmware(Varstore.empty_4m())
    firmware.load_buffer(small_kernel, "/k")
    (event,) = firmware.boot.events
    assert event.pcr_index == 4
    load = UefiImageLoadEvent.parse(event.event)
    assert (load.device_path, load.link_time_address) == (DevicePath(()), 0)
    assert (load.image_location, load.image_length) == (
        IMAGE_TOP_ADDRESS - (len(small_kernel) + 0x1FFF) // 0x1000 * 0x1000 + 0x18,
        len(small_kernel))
    assert event.digest(SHA256) == image_digest(small_kernel, "sha256")


def test_a_missing_loader_names_the_firmware() -> None:
    with pytest.raises(StateError) as caught:
        _firmware(Varstore.empty_4m()).load_image()
    assert str(caught.value) == r"firmware: file \EFI\BOOT\BOOTX64.EFI not found on the ESP"


def test_the_firmware_decides_with_dbx(owner_keys: Any, owner_varstore: Varstore,
                                       small_kernel: bytes) -> None:
    signed = owner_keys.sign(small_kernel)
    revoked = SignatureDatabase((SignatureList.of(EFI_CERT_SHA256, OWNER,
                                                  image_digest(signed, "sha256")),))
    store = owner_varstore.set(EfiVariable("dbx", EFI_IMAGE_SECURITY_DATABASE, 0x27,
                                           revoked.to_bytes()))
    with pytest.raises(PolicyError, match=r"^firmware refused /k: refused .*database dbx\)$"):
        _firmware(store).load_buffer(signed, "/k")


def test_two_db_entries_are_two_authorities(owner_keys: Any, small_kernel: bytes) -> None:
    other_key = generate_rsa_key()
    other = issue_certificate("firmware checks db 2", other_key)
    db = SignatureDatabase((SignatureList.of(EFI_CERT_X509, OWNER, der(owner_keys.db)),
                            SignatureList.of(EFI_CERT_X509, OWNER, der(other))))
    store = _store(("PK", EFI_GLOBAL_VARIABLE, db.to_bytes()),
                   ("db", EFI_IMAGE_SECURITY_DATABASE, db.to_bytes()))
    firmware = _firmware(store)
    firmware.load_buffer(owner_keys.sign(small_kernel), "/a")
    firmware.load_buffer(sign_pe(small_kernel, other_key, other), "/b")
    firmware.load_buffer(sign_pe(small_kernel, other_key, other), "/c")
    authorities = [UefiVariableData.parse(e.event).data[16:] for e in firmware.boot.events
                   if e.event_type == EventType.EV_EFI_VARIABLE_AUTHORITY]
    assert authorities == [der(owner_keys.db), der(other)]


def test_secure_boot_refuses_unsigned_images_before_measuring(
    owner_varstore: Varstore, small_kernel: bytes,
) -> None:
    firmware = _firmware(owner_varstore, {LOADER: small_kernel})
    with pytest.raises(PolicyError, match=r"^firmware refused \\EFI\\BOOT\\BOOTX64\.EFI: refused"):
        firmware.load_image(r"\EFI\BOOT\BOOTX64.EFI")
    with pytest.raises(PolicyError, match=r"^firmware refused /k: refused"):
        firmware.load_buffer(small_kernel, "/k")
    assert firmware.boot.events == ()


def test_each_allowing_db_entry_is_measured_once(owner_keys: Any, owner_varstore: Varstore,
                                                 small_kernel: bytes) -> None:
    signed = owner_keys.sign(small_kernel)
    firmware = _firmware(owner_varstore, {LOADER: signed})
    firmware.load_image()
    firmware.load_buffer(signed, "/k")
    authorities = [e for e in firmware.boot.events
                   if e.event_type == EventType.EV_EFI_VARIABLE_AUTHORITY]
    assert len(authorities) == 1
    variable = UefiVariableData.parse(authorities[0].event)
    assert (authorities[0].pcr_index, variable.vendor_guid, variable.name) == (
        7, EFI_IMAGE_SECURITY_DATABASE, "db")
    assert variable.data == OWNER.to_bytes() + der(owner_keys.db)
    assert authorities[0].digest(SHA256) == hashlib.sha256(authorities[0].event).digest()
    assert _summary(firmware.boot.events) == [
        (7, EventType.EV_EFI_VARIABLE_AUTHORITY),
        (4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION),
        (4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION)]


def test_a_decision_without_an_entry_measures_no_authority() -> None:
    firmware = _firmware(Varstore.empty_4m())
    firmware.measure_authority(Decision("x", True, "hash", "db", b"\0" * 32))
    assert firmware.boot.events == ()
