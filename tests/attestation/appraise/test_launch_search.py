"""The launch-digest explainer finds the nearby configuration that reproduces a measurement."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.attestation.launch_search import MAX_VCPUS, launch_explainer
from cvm.errors import UsageError
from cvm.formats.ovmf.image import OvmfImage, build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.page_info import VMSA_GPA, PageType, extend
from cvm.formats.snp.sev_hashes import SevHashTable
from cvm.formats.snp.vmsa import VmmType
from cvm.image.measurement import VcpuConfig, snp_launch_digest, vmsa_pages
from cvm.image.vcpu_types import vcpu_signature
from cvm.scenarios.attested_guest import Owner

MILAN = vcpu_signature("EPYC-Milan")
EPYC_V4 = vcpu_signature("EPYC-v4")


@pytest.mark.parametrize("observed, hint", [
    (VcpuConfig(3, MILAN), "matches with 3 vCPUs instead of 1"),
    (VcpuConfig(1, vcpu_signature("EPYC-Genoa")),
     "matches with vCPU type EPYC-Genoa instead of EPYC-Milan"),
    (VcpuConfig(1, MILAN, vmm=VmmType.GCE), "matches with VMM gce instead of qemu"),
    (VcpuConfig(1, MILAN, guest_features=0x21),
     "matches with guest features 0x21 instead of 0x1"),
    (VcpuConfig(2, vcpu_signature("EPYC-Rome")),
     "matches with 2 vCPUs instead of 1 and vCPU type EPYC-Rome instead of EPYC-Milan"),
])
def test_nearby_configurations(owner: Owner, observed: VcpuConfig, hint: str) -> None:
    explain = launch_explainer(owner.firmware, VcpuConfig(1, MILAN))
    digest = snp_launch_digest(OvmfImage.parse(owner.firmware), observed)
    assert explain(digest) == hint


def _small_firmware(reset_eip: int = 0x0080B004) -> bytes:
    sections = [MetadataSection(0x800000, 0x2000, SectionType.SNP_SEC_MEM),
                MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
                MetadataSection(0x80E000, 0x1000, SectionType.CPUID)]
    return build_image(0x4000, reset_eip=reset_eip, sections=sections, seed=b"search")


def _digest(firmware: bytes, config: VcpuConfig) -> bytes:
    return snp_launch_digest(OvmfImage.parse(firmware), config)


def test_the_expected_configuration_itself_is_a_stale_reference() -> None:
    firmware = _small_firmware()
    explain = launch_explainer(firmware, VcpuConfig(2, MILAN))
    assert explain(_digest(firmware, VcpuConfig(2, MILAN))) == (
        "the expected configuration reproduces it (the reference is stale?)")
    assert explain(bytes(48)) is None


def test_two_changes_at_once_are_both_named() -> None:
    firmware = _small_firmware()
    explain = launch_explainer(firmware, VcpuConfig(1, MILAN))
    observed = _digest(firmware, VcpuConfig(1, MILAN, 0x21, VmmType.GCE))
    assert explain(observed) == (
        "matches with VMM gce instead of qemu and guest features 0x21 instead of 0x1")


def test_a_signature_outside_the_named_types_is_searched() -> None:
    firmware = _small_firmware()
    custom = 0x00A00F12  # a stepping QEMU has no model for (`--vcpu-sig`)
    explain = launch_explainer(firmware, VcpuConfig(1, custom))
    assert explain(_digest(firmware, VcpuConfig(3, custom))) == "matches with 3 vCPUs instead of 1"
    assert explain(_digest(firmware, VcpuConfig(1, MILAN))) == (
        "matches with vCPU type EPYC-Milan instead of signature 0x00a00f12")


@pytest.mark.parametrize("count, hint", [
    (MAX_VCPUS, f"matches with {MAX_VCPUS} vCPUs instead of 1"), (MAX_VCPUS + 1, None)])
def test_vcpu_counts_up_to_the_limit(count: int, hint: str | None) -> None:
    firmware = _small_firmware()
    explain = launch_explainer(firmware, VcpuConfig(1, MILAN))
    assert explain(_digest(firmware, VcpuConfig(count, MILAN))) == hint


def test_an_expected_count_beyond_the_limit_is_searched() -> None:
    firmware = _small_firmware()
    explain = launch_explainer(firmware, VcpuConfig(MAX_VCPUS + 6, MILAN))
    assert explain(_digest(firmware, VcpuConfig(MAX_VCPUS + 6, MILAN))) == (
        "the expected configuration reproduces it (the reference is stale?)")


def test_a_firmware_without_ap_entry_point_searches_one_vcpu() -> None:
    firmware = _small_firmware(reset_eip=0)
    explain = launch_explainer(firmware, VcpuConfig(1, MILAN))
    observed = _digest(firmware, VcpuConfig(1, MILAN, 0x21))
    assert explain(observed) == "matches with guest features 0x21 instead of 0x1"
    # Two vCPUs cannot launch from it: a two-page digest built by hand is not explained.
    image = OvmfImage.parse(firmware)
    two = _digest(firmware, VcpuConfig(1, MILAN))
    bsp = vmsa_pages(image, VcpuConfig(1, MILAN), 0x1)[0]
    assert explain(extend(two, PageType.VMSA, VMSA_GPA, bsp)) is None


def test_a_firmware_without_reset_block_is_refused() -> None:
    with pytest.raises(UsageError, match=r"^the firmware has no SEV-ES reset block: it cannot "
                       r"boot SNP guests$"):
        launch_explainer(build_image(0x2000, reset_eip=None), VcpuConfig(1, MILAN))


def test_the_kernel_hashes_are_part_of_the_search(vectors: Path) -> None:
    """sev-snp-measure's digest of a 4-vCPU direct boot (expected_digests.txt), explained."""
    fixture = vectors / "snp" / "sev-snp-measure" / "tests" / "fixtures" / "ovmf_AmdSev_suffix.bin"
    hashes = SevHashTable.for_boot(b"", b"", "")
    explain = launch_explainer(fixture.read_bytes(), VcpuConfig(1, EPYC_V4), hashes)
    line = 'snp  vcpus=4 EPYC-v4 gf=0x1  kernel=/dev/null initrd=/dev/null append=""'
    lines = (vectors / "snp" / "expected_digests.txt").read_text().splitlines()
    (recorded,) = [bytes.fromhex(ln.split()[-1]) for ln in lines if ln.startswith(line)]
    assert explain(recorded) == "matches with 4 vCPUs instead of 1"
