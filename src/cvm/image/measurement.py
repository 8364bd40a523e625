"""Launch-digest prediction: what the AMD Secure Processor will measure for an OVMF launch.

* **SEV-SNP** (SEV-SNP Firmware ABI, AMD 56860, §8.17 SNP_LAUNCH_UPDATE, Table 67 PAGE_INFO):
  the digest starts as 48 zero bytes and is folded with one PAGE_INFO per 4 KiB page, in the
  order QEMU issues SNP_LAUNCH_UPDATE (``target/i386/sev.c``): every page of the firmware
  image as NORMAL at ``4 GiB - size``; then every ``ASEV`` metadata section in file order
  (SEC_MEM as ZERO — UNMEASURED on GCE —, SECRETS, CPUID — measured after all other sections
  on EC2 —, SVSM_CAA as ZERO, KERNEL_HASHES as one NORMAL page carrying the SEV hash table, or
  ZERO when no kernel is given); then one VMSA page per vCPU (BSP at 0xFFFFFFF0, APs at the
  SEV-ES reset block's EIP).
* **SEV-ES** (SEV Key Management API, AMD 55766, LAUNCH_UPDATE_DATA / LAUNCH_UPDATE_VMSA):
  SHA-256 over the firmware image, the padded SEV hash table (with a kernel) and each VMSA
  (SEV_FEATURES 0).
* **SEV**: SHA-256 over the firmware image and the padded hash table.

The SNP digest after the firmware pages alone ("OVMF hash") can seed a later prediction, so a
firmware vendor can publish it without publishing the image. A launch under an SVSM at VMPL0
is predicted by :mod:`cvm.image.svsm_measurement`, which reuses :func:`snp_metadata_digest`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

from cvm.errors import FormatError, UsageError
from cvm.formats.ovmf.image import OvmfImage
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.page_info import (
    DIGEST_SIZE,
    PAGE_SIZE,
    VMSA_GPA,
    ZERO_DIGEST,
    PageType,
    extend,
)
from cvm.formats.snp.sev_hashes import SevHashTable
from cvm.formats.snp.vmsa import BSP_RESET_EIP, VmmType, initial_vmsa

DEFAULT_GUEST_FEATURES = 0x1


class SevMode(Enum):
    """The three generations of AMD memory encryption a launch can use."""

    SEV = "sev"
    SEV_ES = "sev-es"
    SNP = "snp"


@dataclass(frozen=True)
class VcpuConfig:
    """How many vCPUs the guest has and what the VMM puts in their initial VMSAs."""

    count: int
    signature: int
    guest_features: int = DEFAULT_GUEST_FEATURES
    vmm: VmmType = VmmType.QEMU

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 512:
            raise UsageError(f"vCPU count {self.count} must be between 1 and 512")
        if not 0 <= self.signature < 1 << 32:
            raise UsageError(f"vCPU signature {self.signature:#x} is not a u32")
        if not 0 <= self.guest_features < 1 << 64:
            raise UsageError(f"guest features {self.guest_features:#x} is not a u64")


def vmsa_pages(image: OvmfImage, vcpus: VcpuConfig, sev_features: int) -> list[bytes]:
    """The initial VMSA of every vCPU: the BSP at the reset vector, APs at the reset block."""
    reset = image.reset_block
    if reset is None:
        raise UsageError("the firmware has no SEV-ES reset block: it cannot boot SEV-ES/SNP guests")
    if reset.eip == 0 and vcpus.count > 1:
        raise UsageError("the firmware's SEV-ES reset block has no AP entry point")

    def page(eip: int) -> bytes:
        return initial_vmsa(
            eip, sev_features=sev_features, vcpu_signature=vcpus.signature, vmm=vcpus.vmm
        ).to_bytes()

    return [page(BSP_RESET_EIP)] + [page(reset.eip)] * (vcpus.count - 1)


def snp_ovmf_digest(image: OvmfImage, seed: bytes = ZERO_DIGEST) -> bytes:
    """The SNP launch digest after the firmware image's NORMAL pages ("OVMF hash")."""
    digest = seed
    for gpa, page in image.pages():
        digest = extend(digest, PageType.NORMAL, gpa, page)
    return digest


def kernel_hashes_page(image: OvmfImage, section: MetadataSection, hashes: SevHashTable) -> bytes:
    """The NORMAL page QEMU builds for the SNP_KERNEL_HASHES section."""
    area = image.sev_hash_table
    if area is None:
        raise UsageError("the firmware has a kernel-hashes section but no SEV hash table entry")
    if section.size != PAGE_SIZE:
        raise FormatError(f"SNP_KERNEL_HASHES section size {section.size:#x} is not one page")
    return hashes.to_page(area.gpa & (PAGE_SIZE - 1))


def _extend_section(
    digest: bytes,
    image: OvmfImage,
    section: MetadataSection,
    hashes: SevHashTable | None,
    vmm: VmmType,
) -> bytes:
    kind = section.type
    if kind is SectionType.SNP_SEC_MEM:
        page_type = PageType.UNMEASURED if vmm is VmmType.GCE else PageType.ZERO
        for gpa in section.pages:
            digest = extend(digest, page_type, gpa)
    elif kind is SectionType.SNP_SECRETS:
        digest = extend(digest, PageType.SECRETS, section.gpa)
    elif kind is SectionType.CPUID:
        digest = extend(digest, PageType.CPUID, section.gpa)
    elif kind is SectionType.SNP_KERNEL_HASHES and hashes is not None:
        page = kernel_hashes_page(image, section, hashes)
        digest = extend(digest, PageType.NORMAL, section.gpa, page)
    else:  # SVSM_CAA, or SNP_KERNEL_HASHES without a kernel
        for gpa in section.pages:
            digest = extend(digest, PageType.ZERO, gpa)
    return digest


def snp_metadata_digest(
    digest: bytes, image: OvmfImage, hashes: SevHashTable | None, vmm: VmmType
) -> bytes:
    """Fold the ``ASEV`` metadata sections of ``image`` into ``digest``, in QEMU's order.

    Every section in file order; on EC2 the CPUID page comes after all the others. The SVSM
    launch (:mod:`cvm.image.svsm_measurement`) applies this to the SVSM image's sections.
    """
    ec2 = vmm is VmmType.EC2
    for section in image.sections:
        if not (ec2 and section.type is SectionType.CPUID):
            digest = _extend_section(digest, image, section, hashes, vmm)
    if ec2:
        for section in image.sections:
            if section.type is SectionType.CPUID:
                digest = extend(digest, PageType.CPUID, section.gpa)
    return digest


def snp_launch_digest(
    image: OvmfImage,
    vcpus: VcpuConfig,
    hashes: SevHashTable | None = None,
    ovmf_digest: bytes | None = None,
) -> bytes:
    """The SEV-SNP MEASUREMENT of a QEMU-style (or EC2/GCE) launch of ``image``.

    ``ovmf_digest`` (from :func:`snp_ovmf_digest`) replaces the firmware pages' part.
    """
    if ovmf_digest is not None and len(ovmf_digest) != DIGEST_SIZE:
        raise UsageError(f"an SNP OVMF hash is {DIGEST_SIZE} bytes, got {len(ovmf_digest)}")
    if hashes is not None and not image.has_section(SectionType.SNP_KERNEL_HASHES):
        raise UsageError(
            "a kernel is given but the firmware's SEV metadata has no SNP_KERNEL_HASHES section"
        )
    digest = snp_ovmf_digest(image) if ovmf_digest is None else ovmf_digest
    digest = snp_metadata_digest(digest, image, hashes, vcpus.vmm)
    for page in vmsa_pages(image, vcpus, vcpus.guest_features):
        digest = extend(digest, PageType.VMSA, VMSA_GPA, page)
    return digest


def _sev_hash_input(image: OvmfImage, hashes: SevHashTable | None) -> bytes:
    if hashes is None:
        return b""
    if image.sev_hash_table is None:
        raise UsageError("a kernel is given but the firmware has no SEV hash table area")
    return hashes.to_bytes()


def sev_es_launch_digest(
    image: OvmfImage, vcpus: VcpuConfig, hashes: SevHashTable | None = None
) -> bytes:
    """The SEV-ES launch digest: SHA-256(firmware || [hash table] || VMSA per vCPU)."""
    digest = hashlib.sha256(image.data)
    digest.update(_sev_hash_input(image, hashes))
    for page in vmsa_pages(image, vcpus, 0):
        digest.update(page)
    return digest.digest()


def sev_launch_digest(image: OvmfImage, hashes: SevHashTable | None = None) -> bytes:
    """The SEV launch digest: SHA-256(firmware || [hash table])."""
    return hashlib.sha256(image.data + _sev_hash_input(image, hashes)).digest()


def launch_digest(
    mode: SevMode,
    image: OvmfImage,
    vcpus: VcpuConfig,
    hashes: SevHashTable | None = None,
    ovmf_digest: bytes | None = None,
) -> bytes:
    """The launch digest of ``image`` in ``mode`` (48 bytes for SNP, 32 for SEV/SEV-ES)."""
    if ovmf_digest is not None and mode is not SevMode.SNP:
        raise UsageError("an OVMF hash can only seed an SNP launch digest")
    if mode is SevMode.SNP:
        return snp_launch_digest(image, vcpus, hashes, ovmf_digest)
    if mode is SevMode.SEV_ES:
        return sev_es_launch_digest(image, vcpus, hashes)
    return sev_launch_digest(image, hashes)
