"""PE/COFF image: DOS stub pointer, COFF file header, optional header, data directories, sections.

Microsoft "PE Format" (Microsoft Learn, 2024-03): §"MS-DOS Stub" (``e_lfanew`` at 0x3C),
§"COFF File Header (Object and Image)" (table of 20 bytes), §"Optional Header (Image Only)"
(PE32 0x60 / PE32+ 0x70 bytes before the data directories), §"Optional Header Data Directories",
§"Section Table (Section Headers)" (40 bytes each) and §"COFF String Table" (long section names
written as ``/<decimal offset>``).

:meth:`PeImage.parse` checks what the UEFI image loaders check before hashing (edk2
``PeCoffLoaderGetPeHeader``, shim ``read_header``): every header, the section table and each
section's raw data lie inside the file, and the attribute certificate table, when present, lies
inside the file after the hashed headers. Any violation is a :class:`~cvm.errors.FormatError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from cvm.errors import FormatError
from cvm.formats.pe.certificate_table import WinCertificate, parse_certificate_table
from cvm.wire import Layout, raw, u8, u16, u32, u64

DOS_MAGIC = b"MZ"
PE_SIGNATURE = b"PE\0\0"
E_LFANEW_OFFSET = 0x3C
PE32_MAGIC = 0x10B
PE32_PLUS_MAGIC = 0x20B
DATA_DIRECTORY_SIZE = 8
SECTION_HEADER_SIZE = 0x28
SYMBOL_SIZE = 18
IMAGE_DIRECTORY_ENTRY_SECURITY = 4
IMAGE_DIRECTORY_ENTRY_BASERELOC = 5
SBAT_SECTION_NAME = b".sbat\0\0\0"
DIRECTORY_NAMES = (
    "export", "import", "resource", "exception", "certificate", "base_relocation", "debug",
    "architecture", "global_ptr", "tls", "load_config", "bound_import", "iat",
    "delay_import", "clr_runtime", "reserved",
)

COFF_FILE_HEADER = Layout("COFF file header", 0x14, [
    u16("machine", 0x00),
    u16("number_of_sections", 0x02),
    u32("time_date_stamp", 0x04),
    u32("pointer_to_symbol_table", 0x08),
    u32("number_of_symbols", 0x0C),
    u16("size_of_optional_header", 0x10),
    u16("characteristics", 0x12),
])

_WINDOWS_FIELDS_TAIL = [
    u32("section_alignment", 0x20),
    u32("file_alignment", 0x24),
    u16("major_operating_system_version", 0x28),
    u16("minor_operating_system_version", 0x2A),
    u16("major_image_version", 0x2C),
    u16("minor_image_version", 0x2E),
    u16("major_subsystem_version", 0x30),
    u16("minor_subsystem_version", 0x32),
    u32("win32_version_value", 0x34),
    u32("size_of_image", 0x38),
    u32("size_of_headers", 0x3C),
    u32("check_sum", 0x40),
    u16("subsystem", 0x44),
    u16("dll_characteristics", 0x46),
]
_STANDARD_FIELDS = [
    u16("magic", 0x00),
    u8("major_linker_version", 0x02),
    u8("minor_linker_version", 0x03),
    u32("size_of_code", 0x04),
    u32("size_of_initialized_data", 0x08),
    u32("size_of_uninitialized_data", 0x0C),
    u32("address_of_entry_point", 0x10),
    u32("base_of_code", 0x14),
]

OPTIONAL_HEADER_PE32 = Layout("PE32 optional header", 0x60, [
    *_STANDARD_FIELDS,
    u32("base_of_data", 0x18),
    u32("image_base", 0x1C),
    *_WINDOWS_FIELDS_TAIL,
    u32("size_of_stack_reserve", 0x48),
    u32("size_of_stack_commit", 0x4C),
    u32("size_of_heap_reserve", 0x50),
    u32("size_of_heap_commit", 0x54),
    u32("loader_flags", 0x58),
    u32("number_of_rva_and_sizes", 0x5C),
])

OPTIONAL_HEADER_PE32_PLUS = Layout("PE32+ optional header", 0x70, [
    *_STANDARD_FIELDS,
    u64("image_base", 0x18),
    *_WINDOWS_FIELDS_TAIL,
    u64("size_of_stack_reserve", 0x48),
    u64("size_of_stack_commit", 0x50),
    u64("size_of_heap_reserve", 0x58),
    u64("size_of_heap_commit", 0x60),
    u32("loader_flags", 0x68),
    u32("number_of_rva_and_sizes", 0x6C),
])

SECTION_HEADER = Layout("section header", SECTION_HEADER_SIZE, [
    raw("name", 0x00, 8),
    u32("virtual_size", 0x08),
    u32("virtual_address", 0x0C),
    u32("size_of_raw_data", 0x10),
    u32("pointer_to_raw_data", 0x14),
    u32("pointer_to_relocations", 0x18),
    u32("pointer_to_linenumbers", 0x1C),
    u16("number_of_relocations", 0x20),
    u16("number_of_linenumbers", 0x22),
    u32("characteristics", 0x24),
])


@dataclass(frozen=True)
class DataDirectory:
    """One ``IMAGE_DATA_DIRECTORY``: an RVA (a file offset for the certificate table) and a size."""

    index: int
    virtual_address: int
    size: int

    @property
    def name(self) -> str:
        return directory_name(self.index)


@dataclass(frozen=True)
class Section:
    """One section header (with its name resolved) and the section's raw data from the file."""

    index: int
    header_offset: int
    raw_name: bytes
    name: str
    virtual_size: int
    virtual_address: int
    size_of_raw_data: int
    pointer_to_raw_data: int
    characteristics: int
    pointer_to_relocations: int
    number_of_relocations: int
    file: bytes = field(repr=False, compare=False)

    @cached_property
    def data(self) -> bytes:
        """The section's ``SizeOfRawData`` bytes from the file (copied on first use)."""
        return section_raw_data(self)

    @property
    def loaded_data(self) -> bytes:
        """The bytes the loader places in memory: ``VirtualSize`` bytes, zero-filled past raw."""
        return section_loaded_data(self)


def directory_name(index: int) -> str:
    """The name of data directory ``index`` (``unknown`` past the sixteen defined)."""
    return DIRECTORY_NAMES[index] if index < len(DIRECTORY_NAMES) else "unknown"


def section_raw_data(section: Section) -> bytes:
    """A section's ``SizeOfRawData`` bytes from its file (``parse`` checked they are inside)."""
    if not section.size_of_raw_data:
        return b""
    start = section.pointer_to_raw_data
    return section.file[start : start + section.size_of_raw_data]


def section_loaded_data(section: Section) -> bytes:
    """``VirtualSize`` bytes of a section's raw data, zero-filled past ``SizeOfRawData``."""
    return section.data[: section.virtual_size].ljust(section.virtual_size, b"\0")


def _resolve_name(raw_name: bytes, data: bytes, string_table: int | None) -> str:
    text = raw_name.rstrip(b"\0").decode("latin-1")
    if text.startswith("/") and text[1:].isdigit() and string_table is not None:
        start = string_table + int(text[1:])
        end = data.find(b"\0", start)
        if start >= len(data) or end < 0:
            raise FormatError(f"PE section name {text}: string table reference out of the file")
        return data[start:end].decode("latin-1")
    return text


@dataclass(frozen=True)
class PeImage:
    """A parsed PE/COFF image; ``data`` is the whole file, returned unchanged by ``to_bytes``."""

    data: bytes
    pe_offset: int
    coff: dict[str, int]
    optional: dict[str, int]
    data_directories: tuple[DataDirectory, ...]
    sections: tuple[Section, ...]
    certificates: tuple[WinCertificate, ...]

    @property
    def optional_header_offset(self) -> int:
        return optional_header_start(self.pe_offset)

    @property
    def is_pe32_plus(self) -> bool:
        return self.optional["magic"] == PE32_PLUS_MAGIC

    @property
    def checksum_offset(self) -> int:
        """File offset of the 4-byte ``CheckSum`` field (not covered by the Authenticode hash)."""
        return checksum_field_offset(self.pe_offset)

    @property
    def data_directory_offset(self) -> int:
        return directories_offset(self.pe_offset, self.optional["magic"])

    @property
    def certificate_directory_offset(self) -> int | None:
        """File offset of data directory 4 (certificate table), or None when it does not exist."""
        return certificate_directory_entry_offset(self)

    @property
    def certificate_table(self) -> DataDirectory:
        """Data directory 4; a zero entry when the image has fewer directories."""
        return certificate_directory(self.data_directories)

    @property
    def size_of_headers(self) -> int:
        return self.optional["size_of_headers"]

    @property
    def section_table_offset(self) -> int:
        return self.optional_header_offset + self.coff["size_of_optional_header"]

    def section(self, name: str) -> Section | None:
        """The first section called ``name`` (long names resolved), or None."""
        return next((s for s in self.sections if s.name == name), None)

    @property
    def sbat(self) -> bytes | None:
        """The SBAT metadata shim reads (:func:`sbat_metadata`), or None."""
        return sbat_metadata(self.sections)

    def to_bytes(self) -> bytes:
        return self.data

    def computed_checksum(self) -> int:
        """The PE ``CheckSum`` of the file (16-bit one's-complement-style sum plus the length).

        Microsoft's ``CheckSumMappedFile`` (imagehlp): words summed with end-around carry, the
        CheckSum field counted as zero. UEFI does not check it; signing tools rewrite it.
        """
        data = bytearray(self.data)
        data[self.checksum_offset : self.checksum_offset + 4] = bytes(4)
        if len(data) % 2:
            data.append(0)
        words = memoryview(bytes(data)).cast("H")
        total = sum(words)
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return (total + len(self.data)) & 0xFFFFFFFF

    @classmethod
    def parse(cls, data: bytes) -> PeImage:
        data = bytes(data)
        if len(data) < E_LFANEW_OFFSET + 4 or data[:2] != DOS_MAGIC:
            raise FormatError("PE image: no MS-DOS header (MZ)")
        pe_offset = int.from_bytes(data[E_LFANEW_OFFSET : E_LFANEW_OFFSET + 4], "little")
        coff_offset = pe_offset + 4
        if data[pe_offset:coff_offset] != PE_SIGNATURE:
            raise FormatError(f"PE image: no PE signature at e_lfanew {pe_offset:#x}")
        coff_end = coff_offset + COFF_FILE_HEADER.size
        coff = _ints(COFF_FILE_HEADER.unpack(_slice(data, coff_offset, coff_end, "COFF header")))
        opt_offset = coff_end
        magic = int.from_bytes(_slice(data, opt_offset, opt_offset + 2, "magic"), "little")
        if magic == PE32_PLUS_MAGIC:
            layout = OPTIONAL_HEADER_PE32_PLUS
        elif magic == PE32_MAGIC:
            layout = OPTIONAL_HEADER_PE32
        else:
            raise FormatError(f"PE image: unknown optional header magic {magic:#x}")
        size_opt = coff["size_of_optional_header"]
        count = (size_opt - layout.size) // DATA_DIRECTORY_SIZE if size_opt >= layout.size else -1
        opt_bytes = _slice(data, opt_offset, opt_offset + layout.size, "optional header")
        optional = _ints(layout.unpack(opt_bytes))
        n_dirs = optional["number_of_rva_and_sizes"]
        if count < 0 or n_dirs > count or n_dirs > len(DIRECTORY_NAMES):
            raise FormatError(
                f"PE image: {n_dirs} data directories do not fit an optional header of "
                f"{size_opt:#x} bytes"
            )
        dd_offset = opt_offset + layout.size
        dd_bytes = _slice(data, dd_offset, dd_offset + n_dirs * DATA_DIRECTORY_SIZE, "directories")
        directories = tuple(
            DataDirectory(
                i,
                int.from_bytes(dd_bytes[8 * i : 8 * i + 4], "little"),
                int.from_bytes(dd_bytes[8 * i + 4 : 8 * i + 8], "little"),
            )
            for i in range(n_dirs)
        )
        sections = _parse_sections(data, coff, opt_offset + size_opt, optional["size_of_headers"])
        certificates: tuple[WinCertificate, ...] = ()
        if n_dirs > IMAGE_DIRECTORY_ENTRY_SECURITY:
            security = directories[IMAGE_DIRECTORY_ENTRY_SECURITY]
            if security.size:
                start, size = security.virtual_address, security.size
                if start < optional["size_of_headers"] or start + size > len(data):
                    raise FormatError(
                        f"PE image: certificate table {start:#x}+{size:#x} lies outside "
                        f"the file ({len(data):#x} bytes) or inside the headers"
                    )
                certificates = parse_certificate_table(data[start : start + size])
        return cls(data, pe_offset, coff, optional, directories, sections, certificates)


def optional_header_start(pe_offset: int) -> int:
    """The optional header's file offset: after the PE signature and the COFF file header."""
    return pe_offset + len(PE_SIGNATURE) + COFF_FILE_HEADER.size


def checksum_field_offset(pe_offset: int) -> int:
    """The ``CheckSum`` field's file offset (0x40 into either optional header)."""
    return optional_header_start(pe_offset) + OPTIONAL_HEADER_PE32.field("check_sum").offset


def directories_offset(pe_offset: int, magic: int) -> int:
    """The data directories' file offset, after the PE32 or PE32+ optional header."""
    layout = OPTIONAL_HEADER_PE32_PLUS if magic == PE32_PLUS_MAGIC else OPTIONAL_HEADER_PE32
    return optional_header_start(pe_offset) + layout.size


def certificate_directory_entry_offset(image: PeImage) -> int | None:
    """File offset of data directory 4's entry, or None when the image has no such entry."""
    if len(image.data_directories) <= IMAGE_DIRECTORY_ENTRY_SECURITY:
        return None
    return (directories_offset(image.pe_offset, image.optional["magic"])
            + IMAGE_DIRECTORY_ENTRY_SECURITY * DATA_DIRECTORY_SIZE)


def certificate_directory(directories: tuple[DataDirectory, ...]) -> DataDirectory:
    """Data directory 4; a zero entry when there are fewer directories."""
    if len(directories) <= IMAGE_DIRECTORY_ENTRY_SECURITY:
        return DataDirectory(IMAGE_DIRECTORY_ENTRY_SECURITY, 0, 0)
    return directories[IMAGE_DIRECTORY_ENTRY_SECURITY]


def sbat_metadata(sections: tuple[Section, ...]) -> bytes | None:
    """The bytes shim's ``verify_buffer_sbat`` reads as SBAT metadata, or None.

    The section is the one whose 8-byte name is ``.sbat`` (a long name from the string table
    does not count); a second one, or one with relocations, is refused (shim answers
    EFI_UNSUPPORTED); one whose ``SizeOfRawData`` is zero or smaller than its ``VirtualSize``
    is ignored, as if there were none. The metadata are the ``VirtualSize`` bytes; shim reads
    ``SizeOfRawData`` bytes, but the linker's zero padding after ``VirtualSize`` ends the text
    there for both (:class:`~cvm.formats.pe.sbat.SbatSection` stops at the first NUL).
    """
    found = [s for s in sections if s.raw_name == SBAT_SECTION_NAME]
    if len(found) > 1:
        raise FormatError(f"PE image: {len(found)} .sbat sections (shim loads none)")
    if not found:
        return None
    section = found[0]
    if section.number_of_relocations or section.pointer_to_relocations:
        raise FormatError(f"PE image: section {section.index} (.sbat) has relocations")
    if not section.size_of_raw_data or section.size_of_raw_data < section.virtual_size:
        return None
    return section.data[: section.virtual_size]


def _ints(values: dict[str, int | bytes]) -> dict[str, int]:
    return {k: v for k, v in values.items() if isinstance(v, int)}


def _slice(data: bytes, start: int, end: int, what: str) -> bytes:
    if start < 0 or end > len(data) or end < start:
        raise FormatError(f"PE image: {what} at {start:#x}..{end:#x} is outside the file")
    return data[start:end]


def _parse_sections(
    data: bytes, coff: dict[str, int], table_offset: int, size_of_headers: int
) -> tuple[Section, ...]:
    count = coff["number_of_sections"]
    table_end = table_offset + count * SECTION_HEADER_SIZE
    _slice(data, table_offset, table_end, "section table")
    if table_end > size_of_headers or size_of_headers > len(data):
        raise FormatError(
            f"PE image: section table ends at {table_end:#x}, SizeOfHeaders is "
            f"{size_of_headers:#x}, file is {len(data):#x} bytes"
        )
    string_table: int | None = None
    if coff["pointer_to_symbol_table"]:
        string_table = coff["pointer_to_symbol_table"] + SYMBOL_SIZE * coff["number_of_symbols"]
    sections = []
    for index in range(count):
        offset = table_offset + index * SECTION_HEADER_SIZE
        fields = SECTION_HEADER.unpack(data[offset : offset + SECTION_HEADER_SIZE])
        raw_name = fields["name"]
        assert isinstance(raw_name, bytes)
        header = _ints(fields)
        start, size = header["pointer_to_raw_data"], header["size_of_raw_data"]
        if size and (start < size_of_headers or start + size > len(data)):
            raise FormatError(
                f"PE image: section {index} raw data {start:#x}+{size:#x} is outside the "
                f"file ({len(data):#x} bytes) or inside the headers"
            )
        sections.append(Section(
            index=index,
            header_offset=offset,
            raw_name=raw_name,
            name=_resolve_name(raw_name, data, string_table),
            virtual_size=header["virtual_size"],
            virtual_address=header["virtual_address"],
            size_of_raw_data=size,
            pointer_to_raw_data=start,
            characteristics=header["characteristics"],
            pointer_to_relocations=header["pointer_to_relocations"],
            number_of_relocations=header["number_of_relocations"],
            file=data,
        ))
    return tuple(sections)
