"""PCR prediction: equal, bit for bit, to the emulated boot; sensitive to exactly its inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate
from cvm.errors import PolicyError
from cvm.formats.pe.sbat import SbatLevel
from cvm.formats.uefi.guids import EFI_CERT_X509, SHIM_LOCK_GUID
from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList
from cvm.formats.uefi.variable import EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.image.pcr_prediction import predict
from cvm.image.signing import sign_pe
from cvm.wire import Guid

BANKS = ("sha1", "sha256")
GRUB_CFG = b"set timeout=0\nlinux /vmlinuz console=ttyS0 quiet\ninitrd /initrd.img\nboot\n"


def _agree(chain: BootChain) -> dict[int, bytes]:
    pcrs = SoftwarePcrBank(BANKS)
    chain.run(pcrs)
    predicted = predict(chain, BANKS)
    for bank in BANKS:
        for pcr, value in predicted.values(bank).items():
            assert pcrs.read(pcr, bank) == value, (bank, pcr)
    return predicted.values("sha256")


def test_uki_cmdline_change_moves_pcr_4_and_11_only(
    owner_keys: Any, owner_varstore: Varstore, make_uki: Any, small_kernel: bytes,
) -> None:
    values = []
    for cmdline in ("console=ttyS0", "console=ttyS0 init=/bin/sh"):
        uki = owner_keys.sign(make_uki(small_kernel, cmdline, b"initrd"))
        values.append(_agree(BootChain(EspFiles({"/EFI/BOOT/BOOTX64.EFI": uki}), owner_varstore)))
    changed = {pcr for pcr in values[0] if values[0][pcr] != values[1][pcr]}
    assert changed == {4, 11}


def test_grub_cfg_change_moves_pcr_8_and_9_only(
    owner_keys: Any, owner_varstore: Varstore, make_grub: Any, small_kernel: bytes,
) -> None:
    grub = owner_keys.sign(make_grub("", "/EFI/cvm"))
    kernel = owner_keys.sign(small_kernel)
    values = []
    for cmdline in (b"quiet", b"quiet single"):
        esp = EspFiles({"/EFI/BOOT/BOOTX64.EFI": grub, "/k": kernel,
                        "/EFI/cvm/grub.cfg": b"linux /k " + cmdline + b"\nboot\n"})
        values.append(_agree(BootChain(esp, owner_varstore)))
    changed = {pcr for pcr in values[0] if values[0][pcr] != values[1][pcr]}
    assert changed == {8, 9}


@pytest.fixture(scope="module")
def debian_esp(debian_boot_binaries: dict[str, Path], owner_keys: Any) -> dict[str, bytes]:
    """Debian's shim re-signed by the owner's db key, Debian's GRUB and kernel unchanged."""
    return {
        "/EFI/BOOT/BOOTX64.EFI": owner_keys.sign(debian_boot_binaries["shim"].read_bytes()),
        "/EFI/BOOT/grubx64.efi": debian_boot_binaries["grub"].read_bytes(),
        "/EFI/debian/grub.cfg": GRUB_CFG,
        "/vmlinuz": debian_boot_binaries["kernel"].read_bytes(),
        "/initrd.img": b"initrd",
    }


@pytest.mark.interop
@pytest.mark.slow
def test_shim_chain_with_owner_keys(debian_esp: dict[str, bytes], owner_varstore: Varstore,
                                    owner_keys: Any) -> None:
    chain = BootChain(EspFiles(debian_esp), owner_varstore)
    result = chain.run(SoftwarePcrBank(BANKS))
    assert result.stages == ("firmware", "shim", "grub", "linux")
    assert result.request.cmdline == "BOOT_IMAGE=/vmlinuz console=ttyS0 quiet"
    authorities = [e.event for e in result.log.events if e.event_type == 0x800000E0]
    assert len(authorities) == 3
    assert der(owner_keys.db) in authorities[0]
    assert b"S\x00b\x00a\x00t\x00L\x00e\x00v\x00e\x00l" in authorities[1]
    assert b"M\x00o\x00k\x00L\x00i\x00s\x00t\x00R\x00T" in authorities[2]
    _agree(chain)


@pytest.mark.interop
@pytest.mark.slow
def test_mok_list_entry_is_measured_and_predicted(
    debian_esp: dict[str, bytes], owner_varstore: Varstore,
) -> None:
    mok = issue_certificate("machine owner key", generate_rsa_key())
    owner = Guid.parse("605dab50-e046-4300-abb6-3dd810dd8b23")
    mok_list = SignatureDatabase((SignatureList.of(EFI_CERT_X509, owner, der(mok)),))
    store = owner_varstore.set(EfiVariable("MokList", SHIM_LOCK_GUID, 0x3, mok_list.to_bytes()))
    with_mok = _agree(BootChain(EspFiles(debian_esp), store))
    without = _agree(BootChain(EspFiles(debian_esp), owner_varstore))
    assert with_mok[14] != without[14]
    assert with_mok[7] == without[7]
    untrusted = owner_varstore.set(EfiVariable("MokListTrusted", SHIM_LOCK_GUID, 0x3, b"\0"))
    chain = BootChain(EspFiles(debian_esp), untrusted)
    events = chain.run().log.events
    trusted = next(e for e in events if e.event == b"MokListTrusted\0")
    assert trusted.digest(0x000B) == hashlib.sha256(b"\0").digest()
    assert _agree(chain)[14] != without[14]


@pytest.mark.interop
@pytest.mark.slow
def test_revoked_grub_is_refused_by_shim_and_prediction(
    debian_esp: dict[str, bytes], owner_varstore: Varstore,
) -> None:
    level = SbatLevel("2099010100", (("shim", 4), ("grub", 99)))
    store = owner_varstore.set(EfiVariable("SbatLevel", SHIM_LOCK_GUID, 0x3, level.to_bytes()))
    chain = BootChain(EspFiles(debian_esp), store)
    with pytest.raises(PolicyError, match="revoked SBAT component grub"):
        chain.run()
    with pytest.raises(PolicyError, match="revoked SBAT component grub"):
        predict(chain)


@pytest.mark.interop
@pytest.mark.slow
def test_tampered_kernel_is_refused_by_shim(
    debian_esp: dict[str, bytes], owner_varstore: Varstore, owner_keys: Any,
) -> None:
    kernel = bytearray(debian_esp["/vmlinuz"])
    kernel[0x4000] ^= 0x01
    files = {**debian_esp, "/vmlinuz": bytes(kernel)}
    with pytest.raises(PolicyError, match="shim refused /vmlinuz"):
        BootChain(EspFiles(files), owner_varstore).run()
    # shim also consults db: re-signed with the owner's db key, the kernel is allowed by db,
    # and shim measures that db entry (its own record of measured entries is separate).
    files["/vmlinuz"] = sign_pe(bytes(kernel), owner_keys.db_key, owner_keys.db)
    chain = BootChain(EspFiles(files), owner_varstore)
    result = chain.run()
    authorities = [e.event for e in result.log.events if e.event_type == 0x800000E0]
    assert len(authorities) == 4
    assert authorities[3] == authorities[0]
    _agree(chain)


def test_kernel_signed_by_another_db_entry_adds_an_authority(
    owner_keys: Any, owner_varstore: Varstore, owner_esl: Any, make_grub: Any, small_kernel: bytes,
) -> None:
    second_key = generate_rsa_key()
    second = issue_certificate("second db signer", second_key)
    db = owner_varstore.get("db")
    assert db is not None
    extended = db.data + owner_esl(second)
    store = owner_varstore.set(EfiVariable("db", db.vendor, db.attributes, extended))
    esp = EspFiles({
        "/EFI/BOOT/BOOTX64.EFI": owner_keys.sign(make_grub("", "/boot/grub")),
        "/boot/grub/grub.cfg": b"linux /k\nboot\n",
        "/k": sign_pe(small_kernel, second_key, second),
    })
    chain = BootChain(esp, store)
    log = chain.run().log
    authorities = [e.event for e in log.events if e.event_type == 0x800000E0]
    assert len(authorities) == 2
    assert authorities[1].endswith(der(second))
    _agree(chain)
