"""The owner's firmware: the OVMF-model image, its varstore, the SVSM image, and the launch
digest the AMD Secure Processor will measure for each mode.

The images are synthetic (:func:`cvm.formats.ovmf.image.build_image`,
:func:`cvm.formats.svsm.svsm_image.build_svsm_image`): their bytes are derived from a seed and
carry the real footer tables and ``ASEV`` metadata, so a launch through the emulated PSP lays
them out and measures them as QEMU does. Predictions (AMD 56860 §8.17 for SNP, 55766 for
SEV/SEV-ES; :mod:`cvm.image.measurement`, :mod:`cvm.image.svsm_measurement`):

* ``sev-snp``: OVMF under the SVSM at VMPL0 (``svsm_launch_digest``), 48 bytes;
* ``sev-es``: SHA-256 over OVMF and one VMSA per vCPU, 32 bytes;
* ``sev``: SHA-256 over OVMF, 32 bytes;
* ``plain``: nothing is measured.

The firmware's own measurements (PCR 0): the S-CRTM version string :data:`CRTM_VERSION` and
OVMF as one firmware volume at ``4 GiB - size`` (:func:`firmware_settings`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import UsageError
from cvm.formats.ovmf.image import OvmfImage, build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.svsm.svsm_image import SvsmImage, build_svsm_image, svsm_end_gpa
from cvm.guest.boot.firmware import (
    OVMF_MODEL_CRTM_VERSION,
    FirmwareSettings,
    ovmf_model_settings,
)
from cvm.image.measurement import VcpuConfig, sev_es_launch_digest, sev_launch_digest
from cvm.image.svsm_measurement import svsm_launch_digest
from cvm.image.vcpu_types import vcpu_signature

MODES = ("plain", "sev", "sev-es", "sev-snp")
OVMF_SIZE = 0x40000
SVSM_SIZE = 0x20000
FOUR_GIB = 1 << 32
CRTM_VERSION = OVMF_MODEL_CRTM_VERSION
DEFAULT_VCPU_TYPE = "EPYC-Milan"
FIRMWARE_SECTIONS = (
    MetadataSection(0x800000, 0x9000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x80E000, 0x1000, SectionType.CPUID),
    MetadataSection(0x80F000, 0x1000, SectionType.SVSM_CAA),
)


@dataclass(frozen=True)
class FirmwareImages:
    """OVMF, its varstore (as written to ``OVMF_VARS.fd``) and the SVSM image (or None)."""

    ovmf: bytes
    vars: bytes
    svsm: bytes | None


def build_firmware(vars_bytes: bytes, with_svsm: bool, seed: bytes = b"cvm OVMF") -> FirmwareImages:
    """The firmware images of one image bundle."""
    ovmf = build_image(OVMF_SIZE, sections=FIRMWARE_SECTIONS, seed=seed)
    svsm = build_svsm_image(SVSM_SIZE, sections=FIRMWARE_SECTIONS,
                            seed=seed + b" SVSM") if with_svsm else None
    return FirmwareImages(ovmf, vars_bytes, svsm)


def firmware_settings(ovmf: bytes) -> FirmwareSettings:
    """What the firmware measures of itself into PCR 0 (the OVMF model's own rule)."""
    return ovmf_model_settings(ovmf)


def vcpu_config(vcpus: int, vcpu_type: str = DEFAULT_VCPU_TYPE) -> VcpuConfig:
    if not 1 <= vcpus <= 64:
        raise UsageError(f"--vcpus: {vcpus} is not between 1 and 64")
    return VcpuConfig(vcpus, vcpu_signature(vcpu_type))


def launch_digest(mode: str, images: FirmwareImages, vcpus: VcpuConfig) -> bytes | None:
    """The launch digest the PSP will report for ``mode`` (None for ``plain``)."""
    ovmf = OvmfImage.parse(images.ovmf)
    if mode == "plain":
        return None
    if mode == "sev":
        return sev_launch_digest(ovmf)
    if mode == "sev-es":
        return sev_es_launch_digest(ovmf, vcpus)
    if mode == "sev-snp":
        if images.svsm is None:
            raise UsageError("an sev-snp launch needs the SVSM image")
        svsm = SvsmImage.parse(images.svsm, end_gpa=svsm_end_gpa(ovmf, len(images.vars)))
        return svsm_launch_digest(ovmf, svsm, vcpus)
    raise UsageError(f"--mode: {mode!r} is not one of {', '.join(MODES)}")
