"""PCR prediction against the emulated boot on the inputs the other tests leave at their
defaults: the platform's S-CRTM version and firmware volumes, failed boot attempts, BootOrder
and its Boot#### options, the disk's GPT, a startup locality, a third bank, Secure Boot off —
each prediction equal to the boot bit for bit in every bank — and the list of what is
predicted per PCR, which ``cvm pcr`` shows the owner to explain a difference."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest

from cvm.crypto.drbg import SeededRandom
from cvm.crypto.x509_edk2 import der
from cvm.errors import PolicyError, StateError
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.vendor_cert import VendorCertSection
from cvm.formats.uefi.guids import (
    EFI_CERT_SHA256,
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    SHIM_LOCK_GUID,
)
from cvm.formats.uefi.signature_list import EFI_CERT_X509, SignatureDatabase, SignatureList
from cvm.formats.uefi.variable import SECURE_BOOT_ATTRIBUTES, EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import DEFAULT_LOADER, FirmwareSettings
from cvm.guest.boot.kernel import LOAD_OPTIONS_EVENT, StubOptions
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.image.boot_chain import (
    GRUB_CFG_PATH,
    GRUB_PATH,
    KERNEL_PATH,
    build_chain,
    make_grub,
    make_kernel,
)
from cvm.image.disk_layout import DiskPlan
from cvm.image.keys import OwnerKeys
from cvm.image.pcr_prediction import PcrPrediction, predict
from cvm.wire import Guid

BANKS = ("sha1", "sha256", "sha384")
BOOT_ATTRIBUTES = 0x07  # NV | BS | RT
SETTINGS = FirmwareSettings(crtm_version="cvm test 2.1",
                            firmware_volumes=((0xFFC00000, b"\x01" * 64), (0xFFE00000, b"fv")),
                            failed_boot_attempts=2)
LOADER = "/EFI/BOOT/BOOTX64.EFI"
OTHER_VENDOR = Guid.parse("4f1c9e2a-6b3d-4c8e-9a1f-0d2e3c4b5a69")
BOOTED = DEFAULT_LOADER  # the path as the firmware names it (backslashes)


def _boot_options(store: Varstore, order: bytes) -> Varstore:
    store = store.set(EfiVariable("BootOrder", EFI_GLOBAL_VARIABLE, BOOT_ATTRIBUTES, order))
    # Boot0003 is named by BootOrder but absent; Boot0300 is present but not named (it would
    # be read at an odd offset of BootOrder).
    for number in (0x0001, 0x000A, 0x0300):
        store = store.set(EfiVariable(f"Boot{number:04X}", EFI_GLOBAL_VARIABLE, BOOT_ATTRIBUTES,
                                      b"option %d" % number))
    return store


def _agree(chain: BootChain, banks: tuple[str, ...] = BANKS, locality: int = 0,
           extended: tuple[int, ...] = (9, 11)) -> PcrPrediction:
    pcrs = SoftwarePcrBank(banks, startup_locality=locality)
    chain.run(pcrs)
    predicted = predict(chain, banks)
    predicted.startup_locality = locality
    for bank in banks:
        values = predicted.values(bank)
        assert set(values) == {0, 1, 2, 3, 4, 5, 6, 7, *extended}
        for pcr, value in values.items():
            assert pcrs.read(pcr, bank) == value, (bank, pcr)
    return predicted


def _described(prediction: PcrPrediction) -> dict[int, list[str]]:
    return {pcr: [m.description for m in items]
            for pcr, items in sorted(prediction.measurements.items())}


@pytest.fixture
def uki_chain(owner_keys: Any, owner_varstore: Varstore, make_uki: Any,
              small_kernel: bytes) -> BootChain:
    uki = owner_keys.sign(make_uki(small_kernel, "console=ttyS0", b"initrd"))
    return BootChain(EspFiles({LOADER: uki}),
                     _boot_options(owner_varstore, bytes([1, 0, 3, 0, 10, 0])),
                     DiskPlan.make(SeededRandom(b"gpt")).gpt_disk(), SETTINGS)


def test_a_uki_boot_with_every_platform_input_is_predicted(uki_chain: BootChain) -> None:
    predicted = _agree(uki_chain)
    calling = "Calling EFI Application from Boot Option"
    returning = "Returning from EFI Application from Boot Option"
    assert _described(predicted) == {
        0: ["S-CRTM version", "firmware volume 0xffc00000", "firmware volume 0xffe00000",
            "separator"],
        1: ["BootOrder", "Boot0001", "Boot000A", "separator"],
        2: ["separator"], 3: ["separator"],
        4: [calling, "separator", returning, calling, returning, calling, f"image {BOOTED}"],
        5: ["separator", "GPT", "Exit Boot Services Invocation",
            "Exit Boot Services Returned with Success"],
        6: ["separator"],
        7: ["SecureBoot", "PK", "KEK", "db", "dbx", "separator", f"authority db for {BOOTED}"],
        9: ["Linux initrd"],
        11: [f"{name} {part}" for name in (".linux", ".osrel", ".cmdline", ".initrd")
             for part in ("name", "contents")],
    }
    assert all(m.digests.keys() == set(BANKS) for items in predicted.measurements.values()
               for m in items)


def test_the_prediction_moves_with_each_platform_input(uki_chain: BootChain,
                                                       owner_varstore: Varstore) -> None:
    base = _agree(uki_chain).values("sha256")
    changes: dict[str, tuple[BootChain, set[int]]] = {
        "crtm": (BootChain(uki_chain.esp, uki_chain.varstore, uki_chain.disk, FirmwareSettings(
            "cvm test 2.2", SETTINGS.firmware_volumes, 2)), {0}),
        "volume": (BootChain(uki_chain.esp, uki_chain.varstore, uki_chain.disk, FirmwareSettings(
            SETTINGS.crtm_version, ((0xFFC00000, b"\x02" * 64),), 2)), {0}),
        "attempts": (BootChain(uki_chain.esp, uki_chain.varstore, uki_chain.disk,
                               FirmwareSettings(SETTINGS.crtm_version,
                                                SETTINGS.firmware_volumes, 0)), {4}),
        "order": (BootChain(uki_chain.esp, _boot_options(owner_varstore, bytes([10, 0, 1, 0])),
                            uki_chain.disk, SETTINGS), {1}),
        "odd order": (BootChain(uki_chain.esp,
                                _boot_options(owner_varstore, bytes([1, 0, 3, 0, 10])),
                                uki_chain.disk, SETTINGS), {1}),
        "no order": (BootChain(uki_chain.esp, owner_varstore, uki_chain.disk, SETTINGS), {1}),
        "disk": (BootChain(uki_chain.esp, uki_chain.varstore,
                           DiskPlan.make(SeededRandom(b"other gpt")).gpt_disk(), SETTINGS), {5}),
        "no disk": (BootChain(uki_chain.esp, uki_chain.varstore, None, SETTINGS), {5}),
    }
    for name, (chain, moved) in changes.items():
        values = _agree(chain).values("sha256")
        assert {p for p in base if values.get(p) != base[p]} == moved, name


@pytest.mark.parametrize("locality", [3, 4])
def test_a_startup_locality_sets_the_initial_value_of_pcr_0(uki_chain: BootChain,
                                                            locality: int) -> None:
    plain = _agree(uki_chain).values("sha256")
    located = _agree(uki_chain, locality=locality).values("sha256")
    assert {p for p in plain if plain[p] != located[p]} == {0}


def test_a_grub_boot_without_shim_with_every_platform_input(
        owner_keys: Any, owner_varstore: Varstore, make_grub: Any, small_kernel: bytes) -> None:
    grub = owner_keys.sign(make_grub("", "/EFI/cvm"))
    esp = EspFiles({LOADER: grub, "/k": owner_keys.sign(small_kernel),
                    "/EFI/cvm/grub.cfg": b"linux /k quiet\nboot\n"})
    chain = BootChain(esp, _boot_options(owner_varstore, bytes([1, 0])),
                      DiskPlan.make(SeededRandom(b"gpt")).gpt_disk(), SETTINGS)
    described = _described(_agree(chain, extended=(8, 9)))
    assert described[4][-2:] == [f"image {BOOTED}", "image /k"]
    assert [d for d in described[7] if d.startswith("authority")] == [
        f"authority db for {BOOTED}"]  # the kernel's db entry is the loader's: measured once


def test_secure_boot_off_predicts_no_authority(make_uki: Any, small_kernel: bytes) -> None:
    chain = BootChain(EspFiles({LOADER: make_uki(small_kernel, "quiet", b"")}),
                      Varstore.empty_4m(), None, SETTINGS)
    described = _described(_agree(chain, ("sha256",), extended=(11,)))  # no initrd: no PCR 9
    assert described[7] == ["SecureBoot", "PK", "KEK", "db", "dbx", "separator"]


def test_an_unsigned_loader_is_a_boot_that_would_be_refused(
        owner_varstore: Varstore, make_uki: Any, small_kernel: bytes) -> None:
    chain = BootChain(EspFiles({LOADER: make_uki(small_kernel, "quiet", b"")}), owner_varstore)
    with pytest.raises(PolicyError, match=r"^the boot would be refused: "):
        predict(chain)


def test_a_loader_that_is_no_boot_path_cvm_knows_is_refused(
        owner_keys: Any, owner_varstore: Varstore, small_kernel: bytes) -> None:
    chain = BootChain(EspFiles({LOADER: owner_keys.sign(small_kernel)}), owner_varstore)
    with pytest.raises(PolicyError) as refused:
        predict(chain)
    assert str(refused.value) == (f"{BOOTED}: cvm predicts UKI, shim and GRUB boot paths only")


def test_each_measurement_is_kept_in_order_with_its_digests() -> None:
    prediction = PcrPrediction(("sha256",))
    prediction.add(3, "first", b"a")
    prediction.add_digests(3, "second", {"sha256": b"\x01" * 32})
    assert [(m.description, m.digests) for m in prediction.measurements[3]] == [
        ("first", {"sha256": bytes.fromhex(
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")}),
        ("second", {"sha256": b"\x01" * 32})]




def test_variables_under_another_vendor_are_not_the_firmwares(
        uki_chain: BootChain, owner_varstore: Varstore) -> None:
    decoys = owner_varstore
    for name, vendor, data in (("BootOrder", OTHER_VENDOR, b"\x01\x00"),
                               ("Boot0001", OTHER_VENDOR, b"option"),
                               ("dbx", EFI_GLOBAL_VARIABLE, b"not the image security dbx")):
        decoys = decoys.set(EfiVariable(name, vendor, BOOT_ATTRIBUTES, data))
    predicted = _agree(BootChain(uki_chain.esp, decoys, None, SETTINGS))
    assert _described(predicted)[1] == ["separator"]
    plain = _agree(BootChain(uki_chain.esp, owner_varstore, None, SETTINGS))
    assert predicted.values("sha256") == plain.values("sha256")
    # BootOrder is the firmware's, Boot0001 is not: only BootOrder is measured.
    order = decoys.set(EfiVariable("BootOrder", EFI_GLOBAL_VARIABLE, BOOT_ATTRIBUTES,
                                   b"\x01\x00"))
    assert _described(_agree(BootChain(uki_chain.esp, order, None, SETTINGS)))[1] == [
        "BootOrder", "separator"]


def test_a_loader_revoked_in_dbx_would_not_boot(uki_chain: BootChain) -> None:
    loader = uki_chain.esp.read(LOADER)
    dbx = SignatureDatabase((SignatureList.of(EFI_CERT_SHA256, OTHER_VENDOR,
                                              image_digest(loader, "sha256")),)).to_bytes()
    revoked = uki_chain.varstore.set(EfiVariable("dbx", EFI_IMAGE_SECURITY_DATABASE,
                                                 SECURE_BOOT_ATTRIBUTES, dbx))
    chain = BootChain(uki_chain.esp, revoked, None, SETTINGS)
    with pytest.raises(PolicyError, match=r"^the boot would be refused: "):
        predict(chain)


MEASURING_KERNEL = build_pe([SectionSpec(".text", b"\x90" * 64 + LOAD_OPTIONS_EVENT.data
                                         + b"\xc3", CODE)])


@pytest.mark.parametrize("cmdline", [b"  console=ttyS0 quiet \0stale\0", b"root=\xff\xfe x",
                                     None])
def test_a_stub_that_measures_its_load_options_is_predicted(
        owner_keys: Any, owner_varstore: Varstore, cmdline: bytes | None) -> None:
    sections = [SectionSpec(".text", b"\xc3" * 64, CODE), SectionSpec(".linux", MEASURING_KERNEL)]
    if cmdline is not None:
        sections.insert(1, SectionSpec(".cmdline", cmdline))
    uki = owner_keys.sign(build_pe(sections))  # no .initrd: nothing for PCR 9 but the options
    predicted = _agree(BootChain(EspFiles({LOADER: uki}), owner_varstore), extended=(9, 11))
    assert _described(predicted)[9] == ["LOADED_IMAGE::LoadOptions"]
    text = (cmdline or b"").split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    assert [m.digests["sha256"] for m in predicted.measurements[9]] == [
        hashlib.sha256((text + "\0").encode("utf-16-le")).digest()]


def test_load_options_measured_by_the_boot_manager_are_predicted(
        owner_keys: Any, owner_varstore: Varstore, make_uki: Any, small_kernel: bytes) -> None:
    uki = owner_keys.sign(make_uki(small_kernel, "console=ttyS0", b"initrd"))
    chain = BootChain(EspFiles({LOADER: uki}), owner_varstore,
                      stub=StubOptions(measure_load_options=True))
    assert _described(_agree(chain))[9] == ["LOADED_IMAGE::LoadOptions", "Linux initrd"]


# ---- shim, GRUB and the kernel, built by the owner's chain builder ----------------------------
@pytest.fixture(scope="module")
def shim_keys() -> OwnerKeys:
    return OwnerKeys.generate(bytes, pcr_policy=False)


def _shim_chain(keys: OwnerKeys, varstore: Varstore | None = None, kernel_signer: str = "vendor",
                shim: bytes | None = None, loader: str = LOADER, partition: int = 1
                ) -> BootChain:
    build = build_chain("shim-grub", keys, b"initrd", "0b7c1d7e-2f4a-4c3b-9d51-6a0e8f2b1c34",
                        False)
    files = build.files
    if kernel_signer == "db":
        files[KERNEL_PATH] = keys.sign_db(make_kernel())
    if shim is not None:
        files[LOADER] = shim
    if loader != LOADER:
        directory = loader.rsplit("/", 1)[0]
        files[loader] = files.pop(LOADER)
        files[f"{directory}/grubx64.efi"] = files.pop(GRUB_PATH)
    disk = replace(DiskPlan.make(SeededRandom(b"gpt")).gpt_disk(), partition_number=partition)
    return BootChain(EspFiles(files), varstore or keys.varstore(), disk, SETTINGS, loader)


def test_a_shim_boot_is_predicted(shim_keys: OwnerKeys) -> None:
    described = _described(_agree(_shim_chain(shim_keys), extended=(8, 9, 14)))
    shim, grub = LOADER, r"\EFI\BOOT\grubx64.efi"
    assert described[14] == ["MokList", "MokListX", "MokListTrusted"]
    assert described[4][-4:] == [f"image {shim}", f"image {grub}", "image /vmlinuz",
                                 "image /vmlinuz"]
    # the vendor certificate allowed GRUB and the kernel: its authority is measured once
    assert described[7] == ["SecureBoot", "PK", "KEK", "db", "dbx", "separator",
                            f"authority db for {shim}", "SbatLevel",
                            f"authority MokListRT for {grub}"]
    assert described[9] == ["(hd0,gpt1)/EFI/BOOT/grub.cfg", "/vmlinuz", "/initrd.img"]


def test_a_kernel_shim_allows_by_db_adds_that_authority(shim_keys: OwnerKeys) -> None:
    described = _described(_agree(_shim_chain(shim_keys, kernel_signer="db"),
                                  extended=(8, 9, 14)))
    authorities = [d for d in described[7] if d.startswith("authority")]
    assert len(authorities) == 3 and authorities[-1].endswith("/vmlinuz")


def test_a_shim_boot_with_secure_boot_off_or_without_an_sbat_level(shim_keys: OwnerKeys) -> None:
    off = _described(_agree(_shim_chain(shim_keys, Varstore.empty_4m()), extended=(8, 9, 14)))
    assert not any(d.startswith("authority") for d in off[7])
    assert shim_keys.vendor is not None
    plain = shim_keys.sign_db(build_pe([SectionSpec(".text", b"\xc3", CODE), SectionSpec(
        ".vendor_cert", VendorCertSection(der(shim_keys.vendor.certificate), b"").to_bytes())]))
    described = _described(_agree(_shim_chain(shim_keys, shim=plain), extended=(8, 9, 14)))
    assert "SbatLevel" not in described[7]


def test_a_shim_in_another_directory_on_another_partition(shim_keys: OwnerKeys) -> None:
    store = shim_keys.varstore().set(EfiVariable("MokListTrusted", SHIM_LOCK_GUID,
                                                 BOOT_ATTRIBUTES, b"\x00"))
    chain = _shim_chain(shim_keys, store, loader="/EFI/cvm/shimx64.efi", partition=2)
    described = _described(_agree(chain, extended=(8, 9, 14)))
    assert r"image \EFI\cvm\grubx64.efi" in described[4]
    assert described[9][0] == "(hd0,gpt2)/EFI/BOOT/grub.cfg"  # GRUB's own prefix
    base = _agree(_shim_chain(shim_keys), extended=(8, 9, 14)).values("sha256")
    moved = _agree(_shim_chain(shim_keys, partition=2), extended=(8, 9, 14)).values("sha256")
    assert base[14] != _agree(chain, extended=(8, 9, 14)).values("sha256")[14]
    assert moved.keys() == base.keys()


def _revoked(store: Varstore, image: bytes) -> Varstore:
    dbx = SignatureDatabase((SignatureList.of(EFI_CERT_SHA256, OTHER_VENDOR,
                                              image_digest(image, "sha256")),)).to_bytes()
    return store.set(EfiVariable("dbx", EFI_IMAGE_SECURITY_DATABASE, SECURE_BOOT_ATTRIBUTES,
                                 dbx))


def test_a_kernel_revoked_in_dbx_would_not_boot_through_shim(shim_keys: OwnerKeys) -> None:
    chain = _shim_chain(shim_keys)
    revoked = _revoked(chain.varstore, chain.esp.read(KERNEL_PATH))
    with pytest.raises(PolicyError, match=r"^the boot would be refused: "):
        predict(BootChain(chain.esp, revoked, chain.disk, SETTINGS, LOADER))


def _grub_chain(keys: OwnerKeys, cfg: bytes, varstore: Varstore | None = None) -> BootChain:
    assert keys.vendor is not None
    esp = EspFiles({LOADER: keys.sign_db(make_grub()), "/k": keys.sign_vendor(make_kernel()),
                    GRUB_CFG_PATH: cfg})
    # db holds the owner's db certificate and the vendor certificate, which signed the kernel
    db = SignatureDatabase(tuple(SignatureList.of(EFI_CERT_X509, OTHER_VENDOR, der(c))
                                 for c in (keys.db.certificate, keys.vendor.certificate)))
    store = varstore or keys.varstore().set(EfiVariable(
        "db", EFI_IMAGE_SECURITY_DATABASE, SECURE_BOOT_ATTRIBUTES, db.to_bytes()))
    return BootChain(esp, store, None, SETTINGS)


def test_a_grub_boot_names_each_authority_and_its_commands(shim_keys: OwnerKeys) -> None:
    chain = _grub_chain(shim_keys, b"linux /k quiet \xff X\nboot\n")
    described = _described(_agree(chain, extended=(8, 9)))
    assert [d for d in described[7] if d.startswith("authority")] == [
        f"authority db for {BOOTED}", "authority db for /k"]
    assert "grub_cmd: linux /k quiet \ufffd X" in described[8]
    assert described[9][0] == "(hd0,gpt1)/EFI/BOOT/grub.cfg"  # no disk: partition 1
    revoked = _revoked(chain.varstore, chain.esp.read("/k"))
    with pytest.raises(PolicyError, match=r"^the boot would be refused: "):
        predict(BootChain(chain.esp, revoked, None, SETTINGS))


def test_a_missing_stage_is_named_for_the_prediction(shim_keys: OwnerKeys) -> None:
    chain = _shim_chain(shim_keys)
    files = {path: chain.esp.read(path) for path in (LOADER, KERNEL_PATH)}
    with pytest.raises(StateError) as refused:
        predict(BootChain(EspFiles(files), chain.varstore, None, SETTINGS, LOADER))
    assert str(refused.value) == r"prediction: file \EFI\BOOT\grubx64.efi not found on the ESP"
    with pytest.raises(StateError) as refused:
        predict(BootChain(EspFiles({}), chain.varstore, None, SETTINGS, LOADER))
    assert str(refused.value) == f"prediction: file {LOADER} not found on the ESP"
