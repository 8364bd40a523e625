"""An OVMF firmware image as a VMM sees it: mapped below 4 GiB, with its footer metadata.

QEMU maps the flash image so that it ends at 4 GiB (``hw/i386/pc_sysfw.c``) and, for SEV
guests, reads the GUIDed footer table (:mod:`cvm.formats.ovmf.footer_table`), the SEV-ES reset
block, the SEV hash table area and the ``ASEV`` metadata sections from it
(``hw/i386/pc_sysfw_ovmf.c``, ``target/i386/sev.c``). :class:`OvmfImage` probes and parses
those; :func:`build_image` lays out a synthetic image with the same structures, as edk2's
reset-vector build places them (metadata descriptor, then the table entries, the footer header
32 bytes before the end of the image).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.formats.ovmf.footer_table import (
    FOOTER_GAP,
    SEV_ES_RESET_BLOCK_GUID,
    SEV_HASH_TABLE_GUID,
    SEV_METADATA_GUID,
    SEV_SECRET_AREA_GUID,
    FooterEntry,
    FooterTable,
)
from cvm.formats.ovmf.reset_block import SevEsResetBlock, published_reset_block
from cvm.formats.ovmf.sev_area import SevArea, published_area
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType, SevMetadata
from cvm.wire import Guid

PAGE_SIZE = 0x1000
FOUR_GIB = 1 << 32
# The last 16 bytes of an x86 flash image hold the reset vector at 0xFFFFFFF0; edk2 puts a
# near jump there (``jmp`` back into the reset-vector code) padded with ``nop``s.
RESET_VECTOR_TAIL = bytes.fromhex(
    "909090909090909090909090909090900f20c0a8017405e92cffffffe911ff90"
)


@dataclass(frozen=True)
class OvmfImage:
    """A firmware image with the SEV-relevant parts of its footer table parsed."""

    data: bytes
    footer: FooterTable | None
    metadata: SevMetadata | None

    @classmethod
    def parse(cls, data: bytes) -> OvmfImage:
        data = bytes(data)
        if not data or len(data) % PAGE_SIZE or len(data) > FOUR_GIB:
            raise FormatError(
                f"OVMF image: size {len(data):#x} is not a non-zero multiple of 4 KiB below 4 GiB"
            )
        footer = FooterTable.locate(data)
        metadata = None
        if footer is not None:
            entry = footer.get(SEV_METADATA_GUID)
            if entry is not None:
                metadata = SevMetadata.locate(data, entry)
        image = cls(data, footer, metadata)
        image.reset_block  # noqa: B018 - parse the optional entries strictly now
        image.sev_hash_table  # noqa: B018
        image.sev_secret_area  # noqa: B018
        return image

    @property
    def gpa(self) -> int:
        """Guest-physical address of the first byte (the image ends at 4 GiB)."""
        return FOUR_GIB - len(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def _entry(self, guid: Guid) -> bytes | None:
        return None if self.footer is None else self.footer.get(guid)

    @property
    def reset_block(self) -> SevEsResetBlock | None:
        """The SEV-ES AP reset block, or None when the firmware does not publish one."""
        return published_reset_block(self._entry(SEV_ES_RESET_BLOCK_GUID))

    @property
    def sev_hash_table(self) -> SevArea | None:
        """Where QEMU writes the kernel hashes, or None when the build has no such area."""
        return published_area(self._entry(SEV_HASH_TABLE_GUID))

    @property
    def sev_secret_area(self) -> SevArea | None:
        return published_area(self._entry(SEV_SECRET_AREA_GUID))

    @property
    def sections(self) -> tuple[MetadataSection, ...]:
        """The SEV metadata sections in file order (empty when the build has none)."""
        return () if self.metadata is None else self.metadata.sections

    def has_section(self, kind: SectionType) -> bool:
        return any(section.type == kind for section in self.sections)

    def pages(self) -> list[tuple[int, bytes]]:
        """``(gpa, 4 KiB page)`` for every page of the image, ascending."""
        return [
            (self.gpa + offset, self.data[offset : offset + PAGE_SIZE])
            for offset in range(0, len(self.data), PAGE_SIZE)
        ]


def build_image(
    size: int,
    *,
    reset_eip: int | None = 0x0080B004,
    sections: Sequence[MetadataSection] = (),
    sev_hash_table: SevArea | None = None,
    sev_secret_area: SevArea | None = None,
    payload: bytes = b"",
    seed: bytes = b"cvm synthetic OVMF",
) -> bytes:
    """Lay out a synthetic firmware image of ``size`` bytes with an OVMF footer table.

    The image starts with ``payload`` and is filled with bytes derived from ``seed``; its last
    page holds the ``ASEV`` metadata (when ``sections`` is given), the footer table entries
    (metadata offset, hash table, secret area, reset block) and the reset vector.
    """
    if size <= 0 or size % PAGE_SIZE or size > FOUR_GIB:
        raise UsageError(f"OVMF image size {size:#x} must be a multiple of 4 KiB below 4 GiB")
    image = bytearray(hashlib.shake_256(seed).digest(size))
    image[: len(payload)] = payload
    image[-FOOTER_GAP:] = RESET_VECTOR_TAIL
    metadata = SevMetadata(tuple(sections)).to_bytes() if sections else b""
    entries: list[FooterEntry] = []
    # The metadata descriptor sits just before the table; its entry holds the offset from the
    # end of the image, which depends on the table size, so lay the table out first.
    placeholder = [FooterEntry(SEV_METADATA_GUID, bytes(4))] if sections else []
    tail_entries = [
        FooterEntry(SEV_HASH_TABLE_GUID, (sev_hash_table or SevArea(0, 0)).to_bytes()),
        FooterEntry(SEV_SECRET_AREA_GUID, (sev_secret_area or SevArea(0, 0)).to_bytes()),
    ]
    if reset_eip is not None:
        reset = SevEsResetBlock(reset_eip).to_bytes()
        tail_entries.append(FooterEntry(SEV_ES_RESET_BLOCK_GUID, reset))
    table_size = FooterTable((*placeholder, *tail_entries)).size
    metadata_start = size - FOOTER_GAP - table_size - len(metadata)
    if metadata_start < len(payload):
        raise UsageError("OVMF image too small for its payload and footer")
    if sections:
        offset = size - metadata_start
        entries.append(FooterEntry(SEV_METADATA_GUID, offset.to_bytes(4, "little")))
    entries.extend(tail_entries)
    table = FooterTable(tuple(entries)).to_bytes()
    image[metadata_start : metadata_start + len(metadata)] = metadata
    image[size - FOOTER_GAP - len(table) : size - FOOTER_GAP] = table
    return bytes(image)
