"""A log cvm writes is read back by tpm2-tools' ``tpm2_eventlog`` with the same PCRs."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.tcg.device_path import DevicePath
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.firmware_blob import FirmwareBlob
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.replay import replay
from cvm.formats.tcg.tagged_event import LINUX_INITRD_EVENT_TAG_ID, TaggedEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.wire import Guid

GLOBAL = Guid.parse("8be4df61-93ca-11d2-aa0d-00e098032b8c")


def _tpm2_eventlog_pcrs(tool: str, path: Path) -> dict[str, dict[int, str]]:
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    section = run.stdout.split("\npcrs:\n", 1)[1]
    values: dict[str, dict[int, str]] = {}
    bank = ""
    for line in section.splitlines():
        if re.fullmatch(r"  \w+:", line):
            bank = line.strip().rstrip(":")
            values[bank] = {}
        elif match := re.fullmatch(r"\s+(\d+)\s*: 0x([0-9a-fA-F]+)", line):
            values[bank][int(match.group(1))] = match.group(2).lower()
    return values


def _measure_sample(boot: MeasuredBoot) -> None:
    boot.measure(0, EventType.EV_S_CRTM_VERSION, "1.0\0".encode("utf-16-le"))
    boot.measure(0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB,
                 FirmwareBlob(0x820000, 0xE0000).to_bytes(), hashed=b"firmware volume")
    boot.measure_variable(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
                          UefiVariableData(GLOBAL, "SecureBoot", b"\x01"))
    boot.measure_variable(1, EventType.EV_EFI_VARIABLE_BOOT,
                          UefiVariableData(GLOBAL, "BootOrder", b"\x00\x00"))
    for pcr in range(8):
        boot.measure_separator(pcr)
    boot.measure_action(4, "Calling EFI Application from Boot Option")
    image = UefiImageLoadEvent(0x3CCC6018, 4096, 0, DevicePath.file_path(r"\EFI\BOOT\BOOTX64.EFI"))
    boot.measure(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, image.to_bytes(), b"an image")
    boot.measure(8, EventType.EV_IPL, b"grub_cmd: boot\0", hashed=b"boot")
    boot.measure(9, EventType.EV_EVENT_TAG,
                 TaggedEvent(LINUX_INITRD_EVENT_TAG_ID, b"Linux initrd\0").to_bytes(), b"initrd")
    boot.measure(14, EventType.EV_IPL, b"MokList\0", hashed=b"")


@pytest.mark.interop
@pytest.mark.parametrize("banks", [("sha1", "sha256"), ("sha256",), ("sha1", "sha256", "sha384")])
def test_tpm2_eventlog_reads_our_log(
    require_tool: Callable[[str], str], tmp_path: Path, banks: tuple[str, ...]
) -> None:
    tool = require_tool("tpm2_eventlog")
    pcrs = SoftwarePcrBank(banks)
    boot = MeasuredBoot(pcrs)
    _measure_sample(boot)
    path = tmp_path / "log.bin"
    path.write_bytes(boot.log.to_bytes())
    theirs = _tpm2_eventlog_pcrs(tool, path)
    ours = replay(boot.log)
    assert set(theirs) == set(banks)
    for bank in banks:
        assert theirs[bank] == {pcr: value.hex() for pcr, value in ours[bank].items()}
        for pcr, value in ours[bank].items():
            assert pcrs.read(pcr, bank) == value


@pytest.mark.interop
def test_tpm2_eventlog_reads_an_emulated_boot_log(
    require_tool: Callable[[str], str], tmp_path: Path
) -> None:
    tool = require_tool("tpm2_eventlog")
    uki = build_pe([SectionSpec(".text", b"\xc3", CODE), SectionSpec(".linux", b"kernel" * 99),
                    SectionSpec(".cmdline", b"quiet\0"), SectionSpec(".initrd", b"initrd")])
    pcrs = SoftwarePcrBank(("sha1", "sha256"))
    result = BootChain(EspFiles({"/EFI/BOOT/BOOTX64.EFI": uki}), Varstore.empty_4m()).run(pcrs)
    path = tmp_path / "boot.bin"
    path.write_bytes(result.log.to_bytes())
    theirs = _tpm2_eventlog_pcrs(tool, path)
    for bank in ("sha1", "sha256"):
        assert theirs[bank] == {p: pcrs.read(p, bank).hex() for p in theirs[bank]}
        assert set(theirs[bank]) == {0, 1, 2, 3, 4, 5, 6, 7, 9, 11}
