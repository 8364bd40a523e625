"""Launch-digest prediction for an SEV-SNP guest with an SVSM at VMPL0 (QEMU + COCONUT-SVSM).

A QEMU built for COCONUT-SVSM (``target/i386/sev.c``, ``-machine igvm``-less flash launch)
maps two flash images: the OVMF code image ending at 4 GiB, then the OVMF variable store below
it, then the SVSM image ending where the variable store begins, i.e. at
``OVMF base - vars size``. The SVSM image carries its own OVMF-style GUIDed footer table
(:mod:`cvm.formats.ovmf.footer_table`) with an ``ASEV`` metadata descriptor and an "SVSM info"
entry ``a789a612-0597-4c4b-a49f-cbb1fe9d1ddd`` whose first u32 is the offset of the SVSM entry
point from the start of the image.

The image format is :mod:`cvm.formats.svsm.svsm_image`. SNP_LAUNCH_UPDATE order (SEV-SNP
Firmware ABI, AMD 56860, §8.17, Table 67 PAGE_INFO):

1. every page of the OVMF image as NORMAL at ``4 GiB - size`` (the variable store is not
   measured);
2. every page of the SVSM image as NORMAL at its mapped address;
3. the SVSM image's metadata sections, as for an OVMF image
   (:func:`cvm.image.measurement.snp_metadata_digest`; no kernel hashes);
4. one VMSA page per vCPU, all identical: the SVSM starts every vCPU at its entry point in
   32-bit protected mode with flat segments (CS selector 8, attributes 0xC9B; data selector
   16, attributes 0xC93, limit 4 GiB - 1; GS keeps its real-mode reset value), CR0 = PE | ET,
   SEV_FEATURES = SNPActive only, MXCSR at its reset value 0x1F80 and — unlike the OVMF-only
   launch — the x87 control word left zero, as the real launch measured for the
   ``sev-snp-measure`` SVSM fixtures shows.

The OVMF image's own metadata is not measured here: the SVSM, not the host, prepares OVMF's
pages. This is the ``snp:svsm`` mode of ``sev-snp-measure`` (virtee, 0.0.13), which only models
QEMU.
"""

from __future__ import annotations

from cvm.errors import UsageError
from cvm.formats.ovmf.image import OvmfImage
from cvm.formats.snp.page_info import VMSA_GPA, PageType, extend
from cvm.formats.snp.vmsa import VmmType
from cvm.formats.svsm.svsm_image import (
    SVSM_SEV_FEATURES,
    SvsmImage,
    build_svsm_image,
    svsm_end_gpa,
    svsm_initial_vmsa,
)
from cvm.image.measurement import (
    DEFAULT_GUEST_FEATURES,
    VcpuConfig,
    snp_metadata_digest,
    snp_ovmf_digest,
)

__all__ = [
    "SVSM_SEV_FEATURES", "SvsmImage", "build_svsm_image", "svsm_end_gpa", "svsm_initial_vmsa",
    "svsm_launch_digest", "svsm_vmsa_pages",
]


def svsm_vmsa_pages(svsm: SvsmImage, vcpus: VcpuConfig) -> list[bytes]:
    """The measured VMSA page of every vCPU (all the same)."""
    page = svsm_initial_vmsa(svsm.entry_point, vcpus.signature).to_bytes()
    return [page] * vcpus.count


def _check_config(vcpus: VcpuConfig) -> None:
    if vcpus.vmm is not VmmType.QEMU:
        raise UsageError("an SVSM launch is only modelled for QEMU (--vmm-type qemu)")
    if vcpus.guest_features != DEFAULT_GUEST_FEATURES:
        raise UsageError(
            f"an SVSM launch fixes SEV_FEATURES at {SVSM_SEV_FEATURES:#x}; "
            f"guest features {vcpus.guest_features:#x} do not apply"
        )


def svsm_launch_digest(ovmf: OvmfImage, svsm: SvsmImage, vcpus: VcpuConfig) -> bytes:
    """The SEV-SNP MEASUREMENT of a QEMU launch of ``ovmf`` under the SVSM ``svsm``."""
    _check_config(vcpus)
    digest = snp_ovmf_digest(ovmf)
    for gpa, page in svsm.pages():
        digest = extend(digest, PageType.NORMAL, gpa, page)
    digest = snp_metadata_digest(digest, svsm.image, None, VmmType.QEMU)
    for page in svsm_vmsa_pages(svsm, vcpus):
        digest = extend(digest, PageType.VMSA, VMSA_GPA, page)
    return digest


