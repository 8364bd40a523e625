"""cvm's emulated firmware, shim and GRUB against the event log of a real boot.

``../shared/vectors/realboot/`` holds the log of Debian's OVMF (Microsoft keys), signed shim,
GRUB and kernel booted in QEMU with swtpm, and every input. Given the same files, grub.cfg, GPT
and varstore, the emulated boot must log the same events for PCR 4, 5, 7, 8, 9 and 14 (types,
PCRs, event data, order) with the same digests wherever the inputs are the same. The initrd of
the real boot is not kept (only its hash), so its PCR 9 digest is substituted; image load
addresses differ by nature (the firmware's allocator) and nothing else in those events may.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.replay import replay
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import FirmwareSettings, GptDisk
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.image.pcr_prediction import predict

COMPARED_PCRS = (4, 5, 7, 8, 9, 14)
MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
STAND_IN_INITRD = b"the real boot's busybox initramfs is not kept; only its hash is"
SHA256 = 0x000B


def _ms_varstore() -> Varstore:
    if not MS_VARS.exists():
        if os.environ.get("CI"):
            pytest.fail("package ovmf is missing in CI")
        pytest.skip("package ovmf is not installed")
    return Varstore.parse(MS_VARS.read_bytes())


def _disk(sgdisk: str, inputs: dict[str, object], tmp_path: Path) -> GptDisk:
    disk = inputs["disk"]
    assert isinstance(disk, dict)
    path = tmp_path / "disk.img"
    with path.open("wb") as handle:
        handle.truncate(int(disk["size_mib"]) << 20)
    end = f"+{disk['esp_size_mib']}M"
    subprocess.run(
        [sgdisk, "--clear", f"--disk-guid={disk['gpt_disk_guid']}",
         "-n", f"1:{disk['esp_first_lba']}:{end}", "-t", "1:EF00",
         "-c", "1:EFI System Partition", "-u", f"1:{disk['esp_partition_guid']}", str(path)],
        check=True, capture_output=True,
    )
    with path.open("rb") as handle:
        return GptDisk.from_disk(handle.read(1 << 20))


@pytest.fixture(scope="module")
def real_log(vectors: Path) -> EventLog:
    return EventLog.parse((vectors / "realboot/eventlog.bin").read_bytes())


@pytest.fixture(scope="module")
def inputs(vectors: Path) -> dict[str, object]:
    loaded = json.loads((vectors / "realboot/inputs.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _esp(binaries: dict[str, Path], inputs: dict[str, object]) -> EspFiles:
    grub_cfg = inputs["grub_cfg"]
    assert isinstance(grub_cfg, str)
    return EspFiles({
        "/EFI/BOOT/BOOTX64.EFI": binaries["shim"].read_bytes(),
        "/EFI/BOOT/grubx64.efi": binaries["grub"].read_bytes(),
        "/EFI/debian/grub.cfg": grub_cfg.encode(),
        "/vmlinuz": binaries["kernel"].read_bytes(),
        "/initrd.img": STAND_IN_INITRD,
    })


def _changed_files(esp: EspFiles, inputs: dict[str, object]) -> set[str]:
    expected = inputs["esp_files_sha256"]
    assert isinstance(expected, dict)
    return {path for path, digest in expected.items()
            if hashlib.sha256(esp[path]).hexdigest() != digest}


def _selected(log: EventLog) -> list[PcrEvent]:
    return [e for e in log.events if e.pcr_index in COMPARED_PCRS]


@pytest.mark.interop
@pytest.mark.slow
def test_emulated_boot_logs_what_the_real_boot_logged(
    vectors: Path, require_tool: Callable[[str], str], debian_boot_binaries: dict[str, Path],
    real_log: EventLog, inputs: dict[str, object], tmp_path: Path,
) -> None:
    esp = _esp(debian_boot_binaries, inputs)
    changed = _changed_files(esp, inputs) - {"/initrd.img"}
    chain = BootChain(esp, _ms_varstore(), _disk(require_tool("sgdisk"), inputs, tmp_path),
                      FirmwareSettings(failed_boot_attempts=1))
    pcrs = SoftwarePcrBank(("sha1", "sha256"))
    ours, theirs = _selected(chain.run(pcrs).log), _selected(real_log)
    assert [(e.pcr_index, e.event_type) for e in ours] == [
        (e.pcr_index, e.event_type) for e in theirs]
    images = {"/EFI/BOOT/BOOTX64.EFI": [0], "/EFI/BOOT/grubx64.efi": [1], "/vmlinuz": [2, 3]}
    skipped_images = {i for path in changed for i in images.get(path, [])}
    image_number = 0
    for mine, real in zip(ours, theirs, strict=True):
        if mine.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION:
            a, b = UefiImageLoadEvent.parse(mine.event), UefiImageLoadEvent.parse(real.event)
            assert (a.image_length, a.link_time_address, a.device_path) == (
                b.image_length, b.link_time_address, b.device_path)
            if image_number not in skipped_images:
                assert mine.digests == real.digests
            image_number += 1
            continue
        assert mine.event == real.event
        if mine.event == b"/initrd.img\0":
            assert mine.digest(SHA256) == hashlib.sha256(STAND_IN_INITRD).digest()
            continue
        file_event = mine.pcr_index == 9 and mine.event.rstrip(b"\0").decode() in changed
        shim_derived = "/EFI/BOOT/BOOTX64.EFI" in changed and mine.pcr_index in (7, 14)
        if not file_event and not shim_derived:
            assert mine.digests == real.digests, mine.event[:60]


@pytest.mark.interop
@pytest.mark.slow
def test_emulated_and_predicted_pcrs_equal_the_real_ones(
    vectors: Path, require_tool: Callable[[str], str], debian_boot_binaries: dict[str, Path],
    real_log: EventLog, inputs: dict[str, object], tmp_path: Path,
) -> None:
    esp = _esp(debian_boot_binaries, inputs)
    if _changed_files(esp, inputs) - {"/initrd.img"}:
        pytest.skip("not applicable: a Debian package of the real boot is no longer served")
    chain = BootChain(esp, _ms_varstore(), _disk(require_tool("sgdisk"), inputs, tmp_path),
                      FirmwareSettings(failed_boot_attempts=1))
    pcrs = SoftwarePcrBank(("sha1", "sha256"))
    log = chain.run(pcrs).log
    real = json.loads((vectors / "realboot/pcrs-all.json").read_text())
    predicted = predict(chain, ("sha1", "sha256"))
    for bank in ("sha1", "sha256"):
        values = predicted.values(bank)
        for pcr in (4, 5, 7, 8, 14):
            assert pcrs.read(pcr, bank).hex() == real[bank][str(pcr)], (bank, pcr)
            assert values[pcr] == pcrs.read(pcr, bank)
    # PCR 9 with the real initrd's digest in place of the stand-in's.
    initrd_sha256 = inputs["esp_files_sha256"]["/initrd.img"]  # type: ignore[index]
    patched = EventLog(log.spec_id, tuple(
        PcrEvent(e.pcr_index, e.event_type, tuple(
            (alg, bytes.fromhex(initrd_sha256) if alg == SHA256 else d) for alg, d in e.digests),
            e.event) if e.event == b"/initrd.img\0" else e
        for e in log.events))
    assert replay(patched, (SHA256,))["sha256"][9].hex() == real["sha256"]["9"]
