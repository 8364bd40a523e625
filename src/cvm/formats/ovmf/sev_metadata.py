"""The OVMF SEV metadata: the ``ASEV`` header and its list of sections QEMU launches.

edk2 ``OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm`` and ``OvmfPkg/Include/WorkArea.h``
(``OVMF_SEV_METADATA_DESC`` / ``OVMF_SEV_METADATA_SECTION_DESC``). The footer-table entry
``dc886566-984a-4798-a75e-5585a7bf67cc`` holds a u32 offset from the end of the image to a
16-byte header ``{'ASEV'; u32 size; u32 version = 1; u32 num_items}`` followed by ``num_items``
12-byte sections ``{u32 gpa; u32 size; u32 type}``; ``size`` covers header and sections.
All integers little-endian.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, u32

SIGNATURE = b"ASEV"
VERSION = 1
PAGE_SIZE = 0x1000
HEADER_LAYOUT = Layout(
    "OVMF_SEV_METADATA_DESC",
    0x10,
    [raw("signature", 0x0, 4), u32("size", 0x4), u32("version", 0x8), u32("num_items", 0xC)],
)
SECTION_LAYOUT = Layout(
    "OVMF_SEV_METADATA_SECTION_DESC",
    0xC,
    [u32("gpa", 0x0), u32("size", 0x4), u32("type", 0x8)],
)
OFFSET_ENTRY_SIZE = 4


def descriptor_size(count: int) -> int:
    """Bytes of a descriptor of ``count`` sections: the header and the sections."""
    return HEADER_LAYOUT.size + SECTION_LAYOUT.size * count


class SectionType(IntEnum):
    """``OVMF_SECTION_TYPE`` values (edk2 WorkArea.h)."""

    SNP_SEC_MEM = 0x01
    SNP_SECRETS = 0x02
    CPUID = 0x03
    SVSM_CAA = 0x04
    SNP_KERNEL_HASHES = 0x10


@dataclass(frozen=True)
class MetadataSection:
    """One guest-physical range the VMM must hand to the firmware before launch."""

    gpa: int
    size: int
    type: SectionType

    def __post_init__(self) -> None:
        if not 0 <= self.gpa < 1 << 32 or not 0 <= self.size < 1 << 32:
            raise UsageError("SEV metadata section GPA and size are u32 values")

    @property
    def pages(self) -> range:
        """The GPAs of the 4 KiB pages the section covers."""
        return range(self.gpa, self.gpa + self.size, PAGE_SIZE)

    @classmethod
    def from_bytes(cls, data: bytes) -> MetadataSection:
        values = {k: v for k, v in SECTION_LAYOUT.unpack(data).items() if isinstance(v, int)}
        try:
            kind = SectionType(values["type"])
        except ValueError:
            raise FormatError(f"SEV metadata: unknown section type {values['type']:#x}") from None
        gpa, size = values["gpa"], values["size"]
        if gpa % PAGE_SIZE or size % PAGE_SIZE:
            raise FormatError(f"SEV metadata: section {gpa:#x}+{size:#x} is not page-aligned")
        return cls(gpa, size, kind)

    def to_bytes(self) -> bytes:
        return SECTION_LAYOUT.pack({"gpa": self.gpa, "size": self.size, "type": int(self.type)})


@dataclass(frozen=True)
class SevMetadata:
    """The ``ASEV`` descriptor: its sections in file order."""

    sections: tuple[MetadataSection, ...]

    @property
    def size(self) -> int:
        return descriptor_size(len(self.sections))

    def has(self, kind: SectionType) -> bool:
        return any(section.type == kind for section in self.sections)

    @classmethod
    def parse(cls, data: bytes) -> SevMetadata:
        """Parse the descriptor at the start of ``data`` (trailing bytes are ignored)."""
        header = HEADER_LAYOUT.unpack(data[: HEADER_LAYOUT.size])
        if header["signature"] != SIGNATURE:
            raise FormatError("SEV metadata: signature is not 'ASEV'")
        if header["version"] != VERSION:
            raise FormatError(f"SEV metadata: unsupported version {header['version']!r}")
        count, size = int(header["num_items"]), int(header["size"])
        if size != descriptor_size(count):
            raise FormatError(f"SEV metadata: size {size:#x} does not match {count} sections")
        if len(data) < size:
            raise FormatError(f"SEV metadata: needs {size:#x} bytes, {len(data):#x} available")
        step = SECTION_LAYOUT.size
        base = HEADER_LAYOUT.size
        return cls(
            tuple(
                MetadataSection.from_bytes(data[base + i * step : base + (i + 1) * step])
                for i in range(count)
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SevMetadata:
        """Parse exactly one descriptor (no trailing bytes)."""
        metadata = cls.parse(data)
        if len(data) != metadata.size:
            raise FormatError(f"SEV metadata: {len(data) - metadata.size} trailing bytes")
        return metadata

    def to_bytes(self) -> bytes:
        header = HEADER_LAYOUT.pack(
            {
                "signature": SIGNATURE,
                "size": self.size,
                "version": VERSION,
                "num_items": len(self.sections),
            }
        )
        return header + b"".join(section.to_bytes() for section in self.sections)

    @classmethod
    def locate(cls, image: bytes, entry: bytes) -> SevMetadata:
        """The descriptor of ``image`` given the data of its footer-table metadata entry."""
        if len(entry) != OFFSET_ENTRY_SIZE:
            raise FormatError(f"SEV metadata entry: expected 4 bytes, got {len(entry)}")
        offset = int.from_bytes(entry, "little")
        if not HEADER_LAYOUT.size <= offset <= len(image):
            raise FormatError(f"SEV metadata offset {offset:#x} is outside the image")
        return cls.parse(image[len(image) - offset :])
