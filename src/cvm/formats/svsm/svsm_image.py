"""The SVSM flash image as QEMU maps it for COCONUT-SVSM, and the VMSA it starts vCPUs with.

A QEMU built for COCONUT-SVSM (``target/i386/sev.c``, ``-machine igvm``-less flash launch)
maps two flash images: the OVMF code image ending at 4 GiB, then the OVMF variable store below
it, then the SVSM image ending where the variable store begins, i.e. at
``OVMF base - vars size``. The SVSM image carries its own OVMF-style GUIDed footer table
(:mod:`cvm.formats.ovmf.footer_table`) with an ``ASEV`` metadata descriptor and an "SVSM info"
entry ``a789a612-0597-4c4b-a49f-cbb1fe9d1ddd`` whose first u32 is the offset of the SVSM entry
point from the start of the image.

The SVSM starts every vCPU at its entry point in 32-bit protected mode with flat segments (CS
selector 8, attributes 0xC9B; data selector 16, attributes 0xC93, limit 4 GiB - 1; GS keeps its
real-mode reset value), CR0 = PE | ET, SEV_FEATURES = SNPActive only, MXCSR at its reset value
0x1F80 and the x87 control word left zero. The launch digest over these pages is predicted by
:mod:`cvm.image.svsm_measurement`; the host lays them out with :mod:`cvm.host.launch`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cvm.errors import UsageError
from cvm.formats.ovmf.footer_table import (
    FOOTER_GAP,
    SEV_METADATA_GUID,
    SVSM_INFO_GUID,
    FooterEntry,
    FooterTable,
)
from cvm.formats.ovmf.image import RESET_VECTOR_TAIL, OvmfImage
from cvm.formats.ovmf.sev_metadata import MetadataSection, SevMetadata
from cvm.formats.snp.page_info import PAGE_SIZE
from cvm.formats.snp.vmsa import DEFAULT_G_PAT, Segment, SevFeatures, Vmsa

SVSM_SEV_FEATURES = int(SevFeatures.SNP_ACTIVE)
SVSM_INFO_SIZE = 4
CODE_SELECTOR, DATA_SELECTOR = 8, 16
FLAT_CODE_ATTRIB, FLAT_DATA_ATTRIB = 0xC9B, 0xC93
FLAT_LIMIT = 0xFFFF_FFFF
CR0_PE_ET = 0x11


@dataclass(frozen=True)
class SvsmImage:
    """An SVSM flash image and the guest-physical address QEMU maps it at."""

    image: OvmfImage
    gpa: int

    @classmethod
    def parse(cls, data: bytes, *, end_gpa: int) -> SvsmImage:
        """Parse ``data`` as an SVSM image mapped to end just below ``end_gpa``."""
        image = OvmfImage.parse(data)
        gpa = end_gpa - image.size
        if gpa < 0 or gpa % PAGE_SIZE:
            raise UsageError(
                f"the SVSM image ({image.size:#x} bytes) cannot end at {end_gpa:#x}: "
                "it would start below 0 or off a page boundary"
            )
        svsm = cls(image, gpa)
        svsm.entry_point  # noqa: B018 - the SVSM info entry is mandatory; check it now
        return svsm

    @property
    def entry_point(self) -> int:
        """Guest-physical address where every vCPU starts (SVSM info offset + base)."""
        return svsm_entry_point(self.image, self.gpa)

    @property
    def sections(self) -> tuple[MetadataSection, ...]:
        return self.image.sections

    def pages(self) -> list[tuple[int, bytes]]:
        """``(gpa, 4 KiB page)`` for every page of the image at its mapped address."""
        data = self.image.data
        return [
            (self.gpa + offset, data[offset : offset + PAGE_SIZE])
            for offset in range(0, len(data), PAGE_SIZE)
        ]


def svsm_entry_point(image: OvmfImage, gpa: int) -> int:
    """Where every vCPU of ``image`` mapped at ``gpa`` starts: ``gpa`` plus the first u32 of the
    SVSM info entry, which is mandatory (a plain function so that mutation testing reaches
    it)."""
    entry = None if image.footer is None else image.footer.get(SVSM_INFO_GUID)
    if entry is None or len(entry) < SVSM_INFO_SIZE:
        raise UsageError(f"the SVSM image has no SVSM info entry ({SVSM_INFO_GUID})")
    return gpa + int.from_bytes(entry[:SVSM_INFO_SIZE], "little")


def svsm_end_gpa(ovmf: OvmfImage, vars_size: int) -> int:
    """Where the SVSM image ends: below OVMF and its variable store of ``vars_size`` bytes."""
    if vars_size < 0 or vars_size % PAGE_SIZE:
        raise UsageError(f"the OVMF variable store size {vars_size:#x} is not a multiple of 4 KiB")
    if vars_size > ovmf.gpa:
        raise UsageError(f"the OVMF variable store size {vars_size:#x} does not fit below OVMF")
    return ovmf.gpa - vars_size


def svsm_initial_vmsa(entry_point: int, vcpu_signature: int) -> Vmsa:
    """The save area QEMU gives every vCPU of an SVSM launch (flat 32-bit, at the entry)."""
    data = Segment(DATA_SELECTOR, FLAT_DATA_ATTRIB, FLAT_LIMIT, 0)
    segments = {
        "es": data,
        "cs": Segment(CODE_SELECTOR, FLAT_CODE_ATTRIB, FLAT_LIMIT, 0),
        "ss": data,
        "ds": data,
        "fs": data,
        "gs": Segment(0, 0x93, 0xFFFF, 0),
        "gdtr": Segment(0, 0, 0xFFFF, 0),
        "ldtr": Segment(0, 0x82, 0xFFFF, 0),
        "idtr": Segment(0, 0, 0xFFFF, 0),
        "tr": Segment(0, 0x8B, 0xFFFF, 0),
    }
    registers = {
        "efer": 0x1000,
        "cr4": 0x40,
        "cr0": CR0_PE_ET,
        "dr7": 0x400,
        "dr6": 0xFFFF0FF0,
        "rflags": 0x2,
        "rip": entry_point,
        "g_pat": DEFAULT_G_PAT,
        "rdx": vcpu_signature,
        "sev_features": SVSM_SEV_FEATURES,
        "xcr0": 0x1,
        "mxcsr": 0x1F80,
    }
    return Vmsa().replace(registers, segments)



def build_svsm_image(
    size: int,
    *,
    entry_offset: int = 0,
    sections: Sequence[MetadataSection] = (),
    seed: bytes = b"cvm synthetic SVSM",
) -> bytes:
    """Lay out a synthetic SVSM flash image of ``size`` bytes.

    Bytes derived from ``seed``, then (in the last page) the ``ASEV`` descriptor when
    ``sections`` is given, a footer table with the metadata offset and the SVSM info entry
    (``entry_offset``), and the reset-vector tail — the structures COCONUT-SVSM's stage-1
    image publishes to QEMU.
    """
    if size <= 0 or size % PAGE_SIZE:
        raise UsageError(f"SVSM image size {size:#x} must be a non-zero multiple of 4 KiB")
    if not 0 <= entry_offset < size:
        raise UsageError(f"SVSM entry offset {entry_offset:#x} is outside the image")
    image = bytearray(hashlib.shake_256(seed).digest(size))
    image[-FOOTER_GAP:] = RESET_VECTOR_TAIL
    metadata = SevMetadata(tuple(sections)).to_bytes() if sections else b""
    info = FooterEntry(SVSM_INFO_GUID, entry_offset.to_bytes(SVSM_INFO_SIZE, "little"))
    placeholder = [FooterEntry(SEV_METADATA_GUID, bytes(4))] if sections else []
    table_size = FooterTable((*placeholder, info)).size
    metadata_start = size - FOOTER_GAP - table_size - len(metadata)
    if metadata_start < 0:
        raise UsageError("SVSM image too small for its footer")
    entries = []
    if sections:
        offset = size - metadata_start
        entries.append(FooterEntry(SEV_METADATA_GUID, offset.to_bytes(4, "little")))
    entries.append(info)
    table = FooterTable(tuple(entries)).to_bytes()
    image[metadata_start : metadata_start + len(metadata)] = metadata
    image[size - FOOTER_GAP - len(table) : size - FOOTER_GAP] = table
    return bytes(image)
