"""shim as a boot stage: the state it decides with, what it measures at start-up, and what it
verifies and measures for each image it loads or is asked to check (shim_lock protocol)."""

from __future__ import annotations

import hashlib

import pytest

from cvm.crypto.x509_edk2 import der
from cvm.errors import PolicyError, StateError
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.sbat import SbatLevel
from cvm.formats.pe.vendor_cert import VendorCertSection
from cvm.formats.tcg.device_path import DevicePath
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.formats.uefi.guids import EFI_IMAGE_SECURITY_DATABASE, SHIM_LOCK_GUID
from cvm.formats.uefi.signature_list import EFI_CERT_X509, SignatureDatabase, SignatureList
from cvm.formats.uefi.variable import EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import IMAGE_TOP_ADDRESS, PAGE_SIZE, Firmware
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.guest.boot.shim import Shim, mok_list_trusted, shim_state
from cvm.image.boot_chain import SHIM_SBAT_LEVEL, make_grub, make_kernel, make_shim
from cvm.image.keys import OwnerKeys
from cvm.wire import Guid

SHA1, SHA256 = 0x0004, 0x000B
MOK_OWNER = Guid.parse("3b1f5c2a-7d4e-4a90-8c61-0f2e9d8b7a65")
SHIM_PATH = r"\EFI\BOOT\BOOTX64.EFI"


@pytest.fixture(scope="module")
def keys() -> OwnerKeys:
    return OwnerKeys.generate(bytes, pcr_policy=False)


@pytest.fixture(scope="module")
def images(keys: OwnerKeys) -> dict[str, bytes]:
    assert keys.vendor is not None
    return {
        "shim": keys.sign_db(make_shim(der(keys.vendor.certificate))),
        "grub": keys.sign_vendor(make_grub()),
        "kernel": keys.sign_vendor(make_kernel()),
        "db-kernel": keys.sign_db(make_kernel("6.1.0-db")),
        "unsigned": make_kernel("6.1.0-unsigned"),
    }


def _shim(varstore: Varstore, shim: bytes, files: dict[str, bytes] | None = None,
          path: str = SHIM_PATH) -> Shim:
    boot = MeasuredBoot(SoftwarePcrBank(("sha1", "sha256")))
    return Shim(Firmware(boot, varstore, EspFiles(files or {}), None), shim, path)


def _mok_list(certificate: bytes) -> bytes:
    return SignatureDatabase((SignatureList.of(EFI_CERT_X509, MOK_OWNER, certificate),)).to_bytes()


def _events(shim: Shim, *types: EventType) -> list[PcrEvent]:
    return [e for e in shim.boot.events if not types or e.event_type in types]


def _shim_lock(store: Varstore, name: str, data: bytes) -> Varstore:
    return store.set(EfiVariable(name, SHIM_LOCK_GUID, 0x7, data))


# --- the state shim decides with ---------------------------------------------------------


def test_the_state_takes_mok_list_from_the_varstore(keys: OwnerKeys,
                                                    images: dict[str, bytes]) -> None:
    db, dbx = SignatureDatabase(), SignatureDatabase()
    assert len(shim_state(Varstore.empty_4m(), db, dbx, images["shim"]).mok_list) == 0
    mok = _mok_list(der(keys.db.certificate))
    state = shim_state(_shim_lock(Varstore.empty_4m(), "MokList", mok), db, dbx, images["shim"])
    assert state.mok_list.to_bytes() == mok
    # MokList under another vendor GUID is not shim's.
    other = Varstore.empty_4m().set(EfiVariable("MokList", MOK_OWNER, 0x7, mok))
    assert len(shim_state(other, db, dbx, images["shim"]).mok_list) == 0


def test_a_stored_sbat_level_applies_only_when_it_is_newer(images: dict[str, bytes]) -> None:
    db, dbx = SignatureDatabase(), SignatureDatabase()
    builtin = SHIM_SBAT_LEVEL.previous
    assert shim_state(Varstore.empty_4m(), db, dbx, images["shim"]).sbat_level == builtin
    newer = SbatLevel("2099010100", (("grub", 9),))
    store = _shim_lock(Varstore.empty_4m(), "SbatLevel", newer.to_bytes())
    state = shim_state(store, db, dbx, images["shim"])
    assert state.sbat_level == newer
    assert state.vendor_cert is not None  # the rest of the state is still the shim's
    # An SbatLevel under another vendor GUID is not shim's.
    foreign = Varstore.empty_4m().set(EfiVariable("SbatLevel", MOK_OWNER, 0x7, newer.to_bytes()))
    assert shim_state(foreign, db, dbx, images["shim"]).sbat_level == builtin
    # The same datestamp (other minimums) or an older one: the built-in level stays.
    for stored in (SbatLevel(builtin.datestamp, (("grub", 9),)),
                   SbatLevel("2000010100", (("grub", 9),))):
        store = _shim_lock(Varstore.empty_4m(), "SbatLevel", stored.to_bytes())
        assert shim_state(store, db, dbx, images["shim"]).sbat_level == builtin
    # A shim without .sbatlevel applies none, whatever is stored.
    plain = build_pe([SectionSpec(".text", b"\xc3", CODE), SectionSpec(
        ".vendor_cert", VendorCertSection(b"", b"").to_bytes())])
    store = _shim_lock(Varstore.empty_4m(), "SbatLevel", newer.to_bytes())
    assert shim_state(store, db, dbx, plain).sbat_level is None


def test_the_state_keeps_the_firmware_databases_and_mok_list(keys: OwnerKeys,
                                                             images: dict[str, bytes]) -> None:
    db = SignatureDatabase.parse(_mok_list(der(keys.db.certificate)))
    dbx = SignatureDatabase.parse(_mok_list(der(keys.pk.certificate)))
    newer = SbatLevel("2099010100", (("grub", 9),))
    mok = _mok_list(der(keys.kek.certificate))
    store = _shim_lock(_shim_lock(Varstore.empty_4m(), "SbatLevel", newer.to_bytes()),
                       "MokList", mok)
    state = shim_state(store, db, dbx, images["shim"])
    assert (state.db, state.dbx, state.sbat_level) == (db, dbx, newer)
    assert state.mok_list.to_bytes() == mok


def test_shim_decides_with_the_firmwares_dbx(keys: OwnerKeys, images: dict[str, bytes]) -> None:
    grub = images["grub"]
    store = keys.varstore(dbx_sha256=[image_digest(grub, "sha256")])
    shim = _shim(store, images["shim"], {"/EFI/BOOT/grubx64.efi": grub})
    assert shim.image == images["shim"]
    assert len(shim.state.dbx) == 1
    with pytest.raises(PolicyError, match=r"refused .*database dbx\)$"):
        shim.load_second_stage()


def test_a_missing_second_stage_names_shim(keys: OwnerKeys, images: dict[str, bytes]) -> None:
    shim = _shim(keys.varstore(), images["shim"])
    with pytest.raises(StateError) as caught:
        shim.load_second_stage()
    assert str(caught.value) == r"shim: file \EFI\BOOT\grubx64.efi not found on the ESP"


def test_mok_list_trusted_is_the_variable_or_one() -> None:
    assert mok_list_trusted(Varstore.empty_4m()) == b"\x01"
    assert mok_list_trusted(_shim_lock(Varstore.empty_4m(), "MokListTrusted", b"\x00")) == b"\x00"
    foreign = Varstore.empty_4m().set(EfiVariable("MokListTrusted", MOK_OWNER, 0x7, b"\x00"))
    assert mok_list_trusted(foreign) == b"\x01"


# --- start-up measurements ---------------------------------------------------------------


def test_start_measures_the_mok_lists_sbat_level_and_mok_list_trusted(
    keys: OwnerKeys, images: dict[str, bytes],
) -> None:
    store = _shim_lock(keys.varstore(), "MokListTrusted", b"\x00")
    shim = _shim(store, images["shim"])
    shim.start()
    events = shim.boot.events
    level = UefiVariableData(SHIM_LOCK_GUID, "SbatLevel", SHIM_SBAT_LEVEL.previous.to_bytes())
    expected = [
        (14, EventType.EV_IPL, b"MokList\0", shim.state.mok_list_rt.to_bytes()),
        (14, EventType.EV_IPL, b"MokListX\0", shim.state.mok_list_x_rt.to_bytes()),
        (7, EventType.EV_EFI_VARIABLE_AUTHORITY, level.to_bytes(), level.to_bytes()),
        (14, EventType.EV_IPL, b"MokListTrusted\0", b"\x00"),
    ]
    assert [(e.pcr_index, e.event_type, e.event) for e in events] == [x[:3] for x in expected]
    for event, (*_, hashed) in zip(events, expected, strict=True):
        assert event.digest(SHA256) == hashlib.sha256(hashed).digest()
        assert event.digest(SHA1) == hashlib.sha1(hashed).digest()
    # MokListRT holds the vendor certificate (the mirrored list is not empty).
    assert shim.state.mok_list_rt.certificates()[-1].data == der(keys.vendor.certificate)


def test_start_without_an_sbat_level_measures_no_pcr7_event(keys: OwnerKeys) -> None:
    assert keys.vendor is not None
    plain = keys.sign_db(build_pe([SectionSpec(".text", b"\xc3", CODE), SectionSpec(
        ".vendor_cert", VendorCertSection(der(keys.vendor.certificate), b"").to_bytes())]))
    shim = _shim(keys.varstore(), plain)
    shim.start()
    assert [(e.pcr_index, e.event) for e in shim.boot.events] == [
        (14, b"MokList\0"), (14, b"MokListX\0"), (14, b"MokListTrusted\0")]
    assert shim.boot.events[-1].digest(SHA256) == hashlib.sha256(b"\x01").digest()


# --- the second stage ---------------------------------------------------------------------


def test_the_second_stage_is_in_shims_directory() -> None:
    shim = _shim(Varstore.empty_4m(), make_shim(b""), path="/EFI/cvm/shimx64.efi")
    assert shim.path == r"\EFI\cvm\shimx64.efi"
    assert shim.second_stage_path() == r"\EFI\cvm\grubx64.efi"
    assert shim.second_stage_path("mmx64.efi") == r"\EFI\cvm\mmx64.efi"


def _image_load(event: PcrEvent) -> UefiImageLoadEvent:
    return UefiImageLoadEvent.parse(event.event)


def _first_address(size: int) -> int:
    return IMAGE_TOP_ADDRESS - (size + 2 * PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE + 0x18


def test_grub_is_verified_by_the_vendor_certificate_and_measured(
    keys: OwnerKeys, images: dict[str, bytes],
) -> None:
    grub = images["grub"]
    shim = _shim(keys.varstore(), images["shim"], {"/EFI/BOOT/grubx64.efi": grub})
    assert shim.load_second_stage() == grub
    authority, image = shim.boot.events
    assert (authority.pcr_index, authority.event_type) == (
        7, EventType.EV_EFI_VARIABLE_AUTHORITY)
    variable = UefiVariableData.parse(authority.event)
    assert (variable.vendor_guid, variable.name) == (SHIM_LOCK_GUID, "MokListRT")
    assert variable.data == SHIM_LOCK_GUID.to_bytes() + der(keys.vendor.certificate)
    assert authority.digest(SHA256) == hashlib.sha256(authority.event).digest()
    assert (image.pcr_index, image.event_type) == (4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION)
    assert image.digest(SHA256) == image_digest(grub, "sha256")
    assert image.digest(SHA1) == image_digest(grub, "sha1")
    assert _image_load(image) == UefiImageLoadEvent(
        _first_address(len(grub)), len(grub), 0,
        DevicePath.file_path(r"\EFI\BOOT\grubx64.efi"))


def test_a_second_stage_shim_refuses_is_not_measured(keys: OwnerKeys,
                                                     images: dict[str, bytes]) -> None:
    shim = _shim(keys.varstore(), images["shim"], {"/EFI/BOOT/grubx64.efi": images["unsigned"]})
    with pytest.raises(PolicyError, match=r"^shim refused \\EFI\\BOOT\\grubx64\.efi: refused"):
        shim.load_second_stage()
    assert shim.boot.events == ()


def test_the_second_stage_needs_sbat(keys: OwnerKeys, images: dict[str, bytes]) -> None:
    # A vendor-signed image without .sbat: refused as the second stage, allowed through the
    # protocol (the kernel).
    shim = _shim(keys.varstore(), images["shim"], {"/EFI/BOOT/grubx64.efi": images["kernel"]})
    with pytest.raises(PolicyError, match=r"no \.sbat section \(mandatory"):
        shim.load_second_stage()
    assert shim.verify(images["kernel"], "/vmlinuz") is not None


# --- the shim_lock protocol and the LoadImage hook ----------------------------------------


def test_the_kernel_through_the_protocol_is_measured_without_a_device_path(
    keys: OwnerKeys, images: dict[str, bytes],
) -> None:
    kernel = images["kernel"]
    shim = _shim(keys.varstore(), images["shim"])
    decision = shim.verify(kernel, "/vmlinuz")
    assert decision is not None and decision.allowed and decision.database == "MokListRT"
    assert shim.load_image(kernel, "/vmlinuz") is None
    authority, verified, loaded = shim.boot.events
    assert UefiVariableData.parse(authority.event).name == "MokListRT"
    for event in (verified, loaded):
        assert (event.pcr_index, event.event_type) == (
            4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION)
        assert event.digest(SHA256) == image_digest(kernel, "sha256")
        load = _image_load(event)
        assert load.device_path == DevicePath(())
        assert (load.image_length, load.link_time_address) == (len(kernel), 0)
    # Each load has its own address, below the previous one.
    first, second = _image_load(verified).image_location, _image_load(loaded).image_location
    assert first == _first_address(len(kernel))
    assert second < first


def test_each_authorising_entry_is_measured_once(keys: OwnerKeys,
                                                 images: dict[str, bytes]) -> None:
    shim = _shim(keys.varstore(), images["shim"], {"/EFI/BOOT/grubx64.efi": images["grub"]})
    shim.load_second_stage()
    shim.verify(images["kernel"], "/vmlinuz")       # the vendor entry again: not measured
    shim.load_image(images["db-kernel"], "/vmlinuz-db")  # db's entry: measured
    shim.load_image(images["db-kernel"], "/vmlinuz-db")  # and once only
    authorities = _events(shim, EventType.EV_EFI_VARIABLE_AUTHORITY)
    found = [UefiVariableData.parse(e.event) for e in authorities]
    assert [(v.vendor_guid, v.name) for v in found] == [
        (SHIM_LOCK_GUID, "MokListRT"), (EFI_IMAGE_SECURITY_DATABASE, "db")]
    assert found[1].data[16:] == der(keys.db.certificate)
    assert len(_events(shim, EventType.EV_EFI_BOOT_SERVICES_APPLICATION)) == 4


def test_the_protocol_refuses_an_unsigned_kernel(keys: OwnerKeys,
                                                 images: dict[str, bytes]) -> None:
    shim = _shim(keys.varstore(), images["shim"])
    for check in (shim.verify, shim.load_image):
        with pytest.raises(PolicyError, match=r"^shim refused /vmlinuz: refused"):
            check(images["unsigned"], "/vmlinuz")
    assert shim.boot.events == ()


def test_with_secure_boot_off_shim_verifies_nothing_and_still_measures(
    images: dict[str, bytes],
) -> None:
    unsigned = images["unsigned"]
    shim = _shim(Varstore.empty_4m(), images["shim"], {"/EFI/BOOT/grubx64.efi": unsigned})
    assert shim.load_second_stage() == unsigned
    assert shim.verify(unsigned, "/vmlinuz") is None
    shim.load_image(unsigned, "/vmlinuz")
    events = shim.boot.events
    assert [e.event_type for e in events] == [EventType.EV_EFI_BOOT_SERVICES_APPLICATION] * 3
    assert all(e.digest(SHA256) == image_digest(unsigned, "sha256") for e in events)
