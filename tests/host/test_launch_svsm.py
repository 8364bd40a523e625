"""An SVSM launch through the emulated PSP: the digest the firmware computes equals the known
answers of vectors/snp/expected_digests.txt (real COCONUT-SVSM fixtures) and the prediction
of ``cvm.image.svsm_measurement`` for synthetic images; the guest then runs at the SVSM entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.amd.kds import ChipFuses
from cvm.errors import UsageError
from cvm.formats.ovmf.image import OvmfImage, build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.sev_hashes import SevHashTable
from cvm.guest.kernel.guest_request import GuestRequester
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.launch import GuestRequestRelay, SnpLaunchConfig, launch_snp_svsm
from cvm.host.vmm import Hypervisor
from cvm.image.measurement import VcpuConfig
from cvm.image.svsm_measurement import (
    SvsmImage,
    build_svsm_image,
    svsm_end_gpa,
    svsm_launch_digest,
)

MIB = 1 << 20
EPYC_V4 = 0x00800F12
MILAN = 0x00A00F11
SECTIONS = (
    MetadataSection(0x0, 0x3000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x3000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x4000, 0x1000, SectionType.CPUID),
    MetadataSection(0x5000, 0x1000, SectionType.SVSM_CAA),
)


def _platform(dram: int = 64 * MIB) -> tuple[Hypervisor, SecureProcessor]:
    machine = Machine(dram)
    psp = SecureProcessor(machine, ChipFuses("Milan", bytes(range(64)), b"\x44" * 64))
    return Hypervisor(machine, psp), psp


def _expected(vectors: Path, vcpus: int) -> bytes:
    text = (vectors / "snp" / "expected_digests.txt").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith(f"snp:svsm vcpus={vcpus} "))
    return bytes.fromhex(line.split()[-1])


def test_real_svsm_launch_equals_the_known_answer(vectors: Path) -> None:
    folder = vectors / "snp" / "sev-snp-measure" / "tests" / "fixtures"
    ovmf, svsm = (folder / "svsm_ovmf.fd").read_bytes(), (folder / "svsm.bin").read_bytes()
    hv, psp = _platform(256 * MIB)
    config = SnpLaunchConfig(vcpus=2, vcpu_signature=EPYC_V4, ram_bytes=0)
    launched = launch_snp_svsm(hv, psp, ovmf, svsm, 540672, config)
    assert launched.measurement == _expected(vectors, 2)


def test_synthetic_svsm_launch_equals_the_prediction_and_boots() -> None:
    ovmf = build_image(0x10000, seed=b"ovmf below svsm")
    svsm = build_svsm_image(0x8000, entry_offset=0x2000, sections=SECTIONS, seed=b"svsm")
    hv, psp = _platform()
    relay = GuestRequestRelay(psp)
    config = SnpLaunchConfig(vcpus=3, vcpu_signature=MILAN)
    launched = launch_snp_svsm(hv, psp, ovmf, svsm, 0x4000, config, relay)
    image = OvmfImage.parse(ovmf)
    svsm_image = SvsmImage.parse(svsm, end_gpa=svsm_end_gpa(image, 0x4000))
    predicted = svsm_launch_digest(image, svsm_image, VcpuConfig(3, MILAN))
    assert launched.measurement == predicted
    assert launched.secrets_gpa == 0x3000 and launched.cpuid_gpa == 0x4000
    vcpu = launched.guest.vcpus[2]
    vcpu.vmrun()
    assert vcpu.register("rip") == svsm_image.entry_point and vcpu.register("cr0") == 0x11
    guest = GuestRequester.start(vcpu, 0x3000, ghcb_gpa=0x10000, request_gpa=0x11000,
                                 response_gpa=0x12000)
    report = AttestationReport.from_bytes(guest.report(b"\x77" * 64).report)
    assert report.measurement == predicted and report.report_data == b"\x77" * 64


def test_svsm_launch_refuses_what_qemu_would_not_measure() -> None:
    ovmf = build_image(0x10000, seed=b"ovmf")
    svsm = build_svsm_image(0x4000, sections=SECTIONS[:2])
    hv, psp = _platform()
    with pytest.raises(UsageError):
        launch_snp_svsm(hv, psp, ovmf, svsm, 0, SnpLaunchConfig(guest_features=0x21))
    with pytest.raises(UsageError):
        hashes = SevHashTable.for_boot(b"kernel")
        launch_snp_svsm(hv, psp, ovmf, svsm, 0, SnpLaunchConfig(hashes=hashes))
    with pytest.raises(UsageError):
        launch_snp_svsm(hv, psp, ovmf, ovmf, 0)  # no SVSM info entry
