"""SEV and SEV-ES launches on the emulated PSP: LAUNCH_MEASURE proves the predicted digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cvm.errors import StatusError
from cvm.formats.ovmf.image import OvmfImage
from cvm.formats.snp.sev_hashes import SevHashTable
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.psp.sev_legacy import LegacyFirmware, measure_mac
from cvm.hardware.psp.status import SevStatus
from cvm.host.launch import launch_sev
from cvm.host.vmm import Hypervisor
from cvm.image.measurement import VcpuConfig, sev_es_launch_digest, sev_launch_digest

TIK = bytes(range(16))
MILAN = 0x00A00F11


def _kat(vectors: Path) -> dict[str, str]:
    text = (vectors / "snp" / "expected_digests.txt").read_text()
    section = text.split("LAUNCH_MEASURE HMAC known answer")[1]
    values: dict[str, str] = {}
    for word in section.split():
        if "=" in word:
            name, _, value = word.partition("=")
            values[name] = value
    return values


def test_measure_known_answer(vectors: Path) -> None:
    kat = _kat(vectors)
    major, minor = (int(part, 16) for part in kat["API"].split("."))
    mac = measure_mac(
        bytes.fromhex(kat["TIK"]),
        (major, minor),
        int(kat["BUILD"], 16),
        int(kat["POLICY"], 16),
        bytes.fromhex(kat["LD"]),
        bytes.fromhex(kat["MNONCE"]),
    )
    assert kat["LD"] == hashlib.sha256(b"").hexdigest()
    assert mac.hex() == kat["MEASURE"]


def _check(psp: SecureProcessor, measure: bytes, policy: int, predicted: bytes) -> None:
    mac, nonce = measure[:32], measure[32:]
    version = psp.version
    expected = measure_mac(
        TIK, (version.major, version.minor), version.build, policy, predicted, nonce
    )
    assert mac == expected


@pytest.mark.parametrize("kernel", [False, True])
def test_sev_launch_measure_matches_prediction(
    platform: tuple[Hypervisor, SecureProcessor], firmware: bytes, kernel: bool
) -> None:
    hv, psp = platform
    hashes = SevHashTable.for_boot(b"bzImage", None, "quiet") if kernel else None
    launched = launch_sev(hv, LegacyFirmware(psp), firmware, es=False, hashes=hashes, tik=TIK)
    _check(psp, launched.measure, 0x1, sev_launch_digest(OvmfImage.parse(firmware), hashes))
    vm = launched.guest.vm
    gpa = OvmfImage.parse(firmware).gpa
    spa = vm.translate(gpa)
    assert spa is not None and hv.machine.host_read(spa, 64) != firmware[:64]
    vm.set_private(gpa, True)
    assert vm.access(gpa, 64) == firmware[:64]


@pytest.mark.parametrize(("vcpus", "kernel"), [(1, False), (3, True)])
def test_sev_es_launch_measure_matches_prediction(
    platform: tuple[Hypervisor, SecureProcessor], firmware: bytes, vcpus: int, kernel: bool
) -> None:
    hv, psp = platform
    hashes = SevHashTable.for_boot(b"bzImage", b"initrd") if kernel else None
    launched = launch_sev(
        hv, LegacyFirmware(psp), firmware, es=True, vcpus=vcpus, hashes=hashes, tik=TIK
    )
    image = OvmfImage.parse(firmware)
    predicted = sev_es_launch_digest(image, VcpuConfig(vcpus, MILAN), hashes)
    _check(psp, launched.measure, 0x5, predicted)
    vcpu = launched.guest.vcpus[-1]
    vcpu.vmrun()
    assert vcpu.register("rip") == (0xFFF0 if vcpus == 1 else 0xB004)


def test_legacy_command_rules(platform: tuple[Hypervisor, SecureProcessor]) -> None:
    hv, psp = platform
    legacy = LegacyFirmware(psp)
    hv.machine.engine.activate(3)
    with pytest.raises(StatusError) as reserved:
        legacy.launch_start(3, 1 << 8)
    assert reserved.value.code == SevStatus.INVALID_PARAM
    handle = legacy.launch_start(3, 0x1, TIK)
    spa = hv.allocate_page()
    with pytest.raises(StatusError) as not_es:
        legacy.launch_update_vmsa(handle, spa)
    assert not_es.value.code == SevStatus.POLICY_FAILURE
    with pytest.raises(StatusError) as unaligned:
        legacy.launch_update_data(handle, spa + 1, 16)
    assert unaligned.value.code == SevStatus.INVALID_LENGTH
    legacy.launch_measure(handle)
    with pytest.raises(StatusError) as late:
        legacy.launch_update_data(handle, spa, 16)
    assert late.value.code == SevStatus.INVALID_GUEST_STATE
    legacy.launch_finish(handle)
