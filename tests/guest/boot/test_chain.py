"""Whole emulated boots with an owner's keys: UKI and GRUB paths, refusals, Secure Boot off."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from cvm.crypto.x509_edk2 import der
from cvm.errors import PolicyError
from cvm.formats.tcg.event_data import StringEvent, decode_event_data
from cvm.formats.tcg.event_digest import validate
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.replay import replay
from cvm.formats.tcg.tagged_event import LINUX_INITRD_EVENT_TAG_ID, TaggedEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.formats.uefi.guids import EFI_IMAGE_SECURITY_DATABASE
from cvm.formats.uefi.variable import EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.image.pcr_prediction import predict

BANKS = ("sha1", "sha256")


def _texts(log: EventLog, pcr: int) -> list[str]:
    found = []
    for event in log.events:
        if event.pcr_index == pcr:
            decoded = decode_event_data(event.event_type, event.event)
            assert isinstance(decoded, StringEvent)
            found.append(decoded.text() or "")
    return found


def _check_agreement(chain: BootChain, pcrs: SoftwarePcrBank, log: EventLog) -> None:
    """Replay of the log, the PCR bank and the prediction agree on every PCR of every bank."""
    assert validate(log) == ()
    replayed = replay(log)
    predicted = predict(chain, BANKS)
    for bank in BANKS:
        values = predicted.values(bank)
        assert set(values) == set(replayed[bank])
        for pcr, value in replayed[bank].items():
            assert pcrs.read(pcr, bank) == value
            assert values[pcr] == value, (bank, pcr)


def test_uki_boot_measures_sections_initrd_and_authority(
    owner_keys: Any, owner_varstore: Varstore, make_uki: Callable[[bytes, str, bytes], bytes],
    small_kernel: bytes,
) -> None:
    uki = owner_keys.sign(make_uki(small_kernel, "console=ttyS0 root=/dev/vda2", b"initrd!"))
    chain = BootChain(EspFiles({"/EFI/BOOT/BOOTX64.EFI": uki}), owner_varstore)
    pcrs = SoftwarePcrBank(BANKS)
    result = chain.run(pcrs)
    assert result.stages == ("firmware", "uki", "linux")
    assert result.request.cmdline == "console=ttyS0 root=/dev/vda2"
    names = [".linux", ".osrel", ".cmdline", ".initrd"]
    assert _texts(result.log, 11) == [n for n in names for _ in range(2)]
    pcr11 = [e for e in result.log.events if e.pcr_index == 11]
    assert pcr11[0].digest(0x000B) == hashlib.sha256(b".linux\0").digest()
    assert pcr11[1].digest(0x000B) == hashlib.sha256(small_kernel).digest()
    tagged = [e for e in result.log.events if e.event_type == EventType.EV_EVENT_TAG]
    assert len(tagged) == 1
    assert TaggedEvent.parse(tagged[0].event).tagged_event_id == LINUX_INITRD_EVENT_TAG_ID
    assert tagged[0].digest(0x000B) == hashlib.sha256(b"initrd!").digest()
    authority = [e for e in result.log.events
                 if e.event_type == EventType.EV_EFI_VARIABLE_AUTHORITY]
    assert len(authority) == 1
    entry = UefiVariableData.parse(authority[0].event)
    assert entry.name == "db"
    assert entry.data[16:] == der(owner_keys.db)
    _check_agreement(chain, pcrs, result.log)


def test_tampered_uki_is_refused_by_boot_and_prediction(
    owner_keys: Any, owner_varstore: Varstore, make_uki: Callable[[bytes, str, bytes], bytes],
    small_kernel: bytes,
) -> None:
    uki = bytearray(owner_keys.sign(make_uki(small_kernel, "quiet", b"initrd")))
    uki[uki.index(b"initrd")] ^= 1
    chain = BootChain(EspFiles({"/EFI/BOOT/BOOTX64.EFI": bytes(uki)}), owner_varstore)
    with pytest.raises(PolicyError, match=r"BOOTX64\.EFI"):
        chain.run()
    with pytest.raises(PolicyError):
        predict(chain)


GRUB_CFG = """\
set timeout=3
set default="1"
if [ -e /EFI/cvm/extra.cfg ]; then
  source /EFI/cvm/extra.cfg
else
  echo "no extra"
fi
menuentry 'First' {
  linux /vmlinuz-a quiet
}
menuentry "Second $kver" --id second {
  linux /vmlinuz-b root=/dev/vda2 'console=ttyS0,115200'
  initrd /initrd-b /early.cpio
}
"""


def test_grub_boot_runs_the_default_entry(
    owner_keys: Any, owner_varstore: Varstore, make_grub: Callable[[str, str], bytes],
    small_kernel: bytes,
) -> None:
    grub = owner_keys.sign(make_grub("", "/EFI/cvm"))
    kernel = owner_keys.sign(small_kernel)
    esp = EspFiles({
        "/EFI/BOOT/BOOTX64.EFI": grub, "/EFI/cvm/grub.cfg": GRUB_CFG.encode(),
        "/EFI/cvm/extra.cfg": b"set kver=6.1\n", "/vmlinuz-a": b"A", "/vmlinuz-b": kernel,
        "/initrd-b": b"initrd b", "/early.cpio": b"early",
    })
    chain = BootChain(esp, owner_varstore)
    pcrs = SoftwarePcrBank(BANKS)
    result = chain.run(pcrs)
    assert result.stages == ("firmware", "grub", "linux")
    assert result.request.kernel == kernel
    # GRUB without shim has the firmware load the kernel: a second PCR 4 image event, and no
    # second authority (the same db entry allowed GRUB).
    images = [e for e in result.log.events
              if e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION]
    assert len(images) == 2
    assert sum(e.event_type == EventType.EV_EFI_VARIABLE_AUTHORITY
               for e in result.log.events) == 1
    assert result.request.initrd == b"initrd bearly"
    assert result.request.cmdline == "BOOT_IMAGE=/vmlinuz-b root=/dev/vda2 console=ttyS0,115200"
    assert _texts(result.log, 8) == [
        "grub_cmd: set timeout=3",
        "grub_cmd: set default=1",
        "grub_cmd: [ -e /EFI/cvm/extra.cfg ]",
        "grub_cmd: source /EFI/cvm/extra.cfg",
        "grub_cmd: set kver=6.1",
        "grub_cmd: menuentry First {\n  linux /vmlinuz-a quiet\n}",
        "grub_cmd: menuentry Second 6.1 --id second {\n  linux /vmlinuz-b root=/dev/vda2 "
        "'console=ttyS0,115200'\n  initrd /initrd-b /early.cpio\n}",
        "grub_cmd: setparams Second 6.1",
        "grub_cmd: linux /vmlinuz-b root=/dev/vda2 console=ttyS0,115200",
        "kernel_cmdline: /vmlinuz-b root=/dev/vda2 console=ttyS0,115200",
        "grub_cmd: initrd /initrd-b /early.cpio",
    ]
    assert _texts(result.log, 9) == [
        "(hd0,gpt1)/EFI/cvm/grub.cfg", "/EFI/cvm/extra.cfg", "/vmlinuz-b", "/initrd-b",
        "/early.cpio",
    ]
    cfg_event = next(e for e in result.log.events if e.pcr_index == 9)
    assert cfg_event.digest(0x000B) == hashlib.sha256(GRUB_CFG.encode()).digest()
    command = next(e for e in result.log.events if e.pcr_index == 8)
    assert command.digest(0x0004) == hashlib.sha1(b"set timeout=3").digest()
    _check_agreement(chain, pcrs, result.log)


def test_secure_boot_off_boots_unsigned_images_without_authorities(
    make_grub: Callable[[str, str], bytes], small_kernel: bytes,
) -> None:
    esp = EspFiles({
        "/EFI/BOOT/BOOTX64.EFI": make_grub("", "/boot/grub"),
        "/boot/grub/grub.cfg": b"linux /k\nboot\n", "/k": small_kernel,
    })
    chain = BootChain(esp, Varstore.empty_4m())
    pcrs = SoftwarePcrBank(BANKS)
    result = chain.run(pcrs)
    types = [e.event_type for e in result.log.events]
    assert EventType.EV_EFI_VARIABLE_AUTHORITY not in types
    secure_boot = UefiVariableData.parse(result.log.events[1].event)
    assert (secure_boot.name, secure_boot.data) == ("SecureBoot", b"\0")
    assert _texts(result.log, 8)[-1] == "grub_cmd: boot"
    _check_agreement(chain, pcrs, result.log)


def test_unsigned_kernel_is_refused_when_grub_runs_without_shim(
    owner_keys: Any, owner_varstore: Varstore, make_grub: Callable[[str, str], bytes],
    small_kernel: bytes,
) -> None:
    esp = EspFiles({"/EFI/BOOT/BOOTX64.EFI": owner_keys.sign(make_grub("", "/boot/grub")),
                    "/boot/grub/grub.cfg": b"linux /k\nboot\n", "/k": small_kernel})
    with pytest.raises(PolicyError, match="firmware refused /k"):
        BootChain(esp, owner_varstore).run()


def test_unsigned_loader_is_refused_with_secure_boot_on(
    owner_varstore: Varstore, make_grub: Callable[[str, str], bytes],
) -> None:
    esp = EspFiles({"/EFI/BOOT/BOOTX64.EFI": make_grub("", "/boot/grub")})
    with pytest.raises(PolicyError, match="unsigned"):
        BootChain(esp, owner_varstore).run()


def test_dbt_is_measured_only_when_present(
    owner_keys: Any, owner_varstore: Varstore, make_uki: Callable[[bytes, str, bytes], bytes],
    small_kernel: bytes,
) -> None:
    uki = owner_keys.sign(make_uki(small_kernel, "quiet", b""))
    esp = EspFiles({"/EFI/BOOT/BOOTX64.EFI": uki})
    names = []
    for store in (owner_varstore, owner_varstore.set(EfiVariable(
            "dbt", EFI_IMAGE_SECURITY_DATABASE, 0x27, b""))):
        chain = BootChain(esp, store)
        pcrs = SoftwarePcrBank(BANKS)
        log = chain.run(pcrs).log
        names.append([UefiVariableData.parse(e.event).name for e in log.events
                      if e.event_type == EventType.EV_EFI_VARIABLE_DRIVER_CONFIG])
        _check_agreement(chain, pcrs, log)
    assert names == [["SecureBoot", "PK", "KEK", "db", "dbx"],
                     ["SecureBoot", "PK", "KEK", "db", "dbx", "dbt"]]
