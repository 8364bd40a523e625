"""Build a PE32+ EFI image from sections (what a linker or ``objcopy --add-section`` emits).

Microsoft "PE Format" §"MS-DOS Stub", §"COFF File Header", §"Optional Header (Image Only)" and
§"Section Table": a 64-byte MS-DOS header pointing at the PE signature, a PE32+ optional header
with 16 data directories, section raw data at ``FileAlignment`` and virtual addresses at
``SectionAlignment``. Used to make boot stages and unified kernel images from parts, and small
images for tests; :meth:`cvm.formats.pe.image.PeImage.parse` reads back what this writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import UsageError
from cvm.formats.pe.image import (
    COFF_FILE_HEADER,
    DATA_DIRECTORY_SIZE,
    DIRECTORY_NAMES,
    E_LFANEW_OFFSET,
    OPTIONAL_HEADER_PE32,
    OPTIONAL_HEADER_PE32_PLUS,
    PE32_MAGIC,
    PE32_PLUS_MAGIC,
    PE_SIGNATURE,
    SECTION_HEADER,
)

IMAGE_FILE_MACHINE_AMD64 = 0x8664
IMAGE_FILE_MACHINE_I386 = 0x014C
IMAGE_FILE_32BIT_MACHINE = 0x0100
IMAGE_FILE_EXECUTABLE_IMAGE = 0x0002
IMAGE_FILE_LARGE_ADDRESS_AWARE = 0x0020
IMAGE_SUBSYSTEM_EFI_APPLICATION = 10
IMAGE_SCN_CNT_CODE = 0x00000020
IMAGE_SCN_CNT_INITIALIZED_DATA = 0x00000040
IMAGE_SCN_MEM_EXECUTE = 0x20000000
IMAGE_SCN_MEM_READ = 0x40000000
IMAGE_SCN_MEM_WRITE = 0x80000000
CODE = IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_EXECUTE | IMAGE_SCN_MEM_READ
DATA = IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ
DOS_HEADER_SIZE = 0x40
FILE_ALIGNMENT = 0x200
SECTION_ALIGNMENT = 0x1000
STRING_TABLE_SIZE_FIELD = 4


@dataclass(frozen=True)
class SectionSpec:
    """A section to lay out: name (at most 8 bytes), contents and characteristics."""

    name: str
    data: bytes
    characteristics: int = DATA


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def build_pe(
    sections: list[SectionSpec] | tuple[SectionSpec, ...],
    trailer: bytes = b"",
    subsystem: int = IMAGE_SUBSYSTEM_EFI_APPLICATION,
    timestamp: int = 0,
    pe32: bool = False,
) -> bytes:
    """A PE32+ (or, ``pe32``, an IA-32 PE32) image with ``sections``, then ``trailer``."""
    if not sections:
        raise UsageError("a PE image needs at least one section")
    # Names longer than 8 bytes go to the COFF string table as "/offset", as GNU ld and
    # objcopy write them (shim's ``.vendor_cert``, ``.sbatlevel``); the table follows the last
    # section, with no symbols before it.
    strings = bytearray(STRING_TABLE_SIZE_FIELD)
    names: list[bytes] = []
    for section in sections:
        encoded = section.name.encode("ascii")
        if not encoded or b"\0" in encoded:
            raise UsageError(f"section name {section.name!r} is empty or holds a NUL")
        if len(encoded) > 8:
            names.append(f"/{len(strings)}".encode("ascii"))
            strings += encoded + b"\0"
        else:
            names.append(encoded)
    string_table = bytes(strings[:0]) if len(strings) == STRING_TABLE_SIZE_FIELD else (
        len(strings).to_bytes(4, "little") + bytes(strings[STRING_TABLE_SIZE_FIELD:]))
    pe_offset = DOS_HEADER_SIZE
    directories = len(DIRECTORY_NAMES)
    layout = OPTIONAL_HEADER_PE32 if pe32 else OPTIONAL_HEADER_PE32_PLUS
    optional_size = layout.size + directories * DATA_DIRECTORY_SIZE
    table = pe_offset + len(PE_SIGNATURE) + COFF_FILE_HEADER.size + optional_size
    headers = _align(table + len(sections) * SECTION_HEADER.size, FILE_ALIGNMENT)
    # The first section is loaded after the headers (edk2's loader refuses a section whose
    # address is below SizeOfHeaders), each one at the next SectionAlignment boundary.
    raw_offset, virtual = headers, _align(headers, SECTION_ALIGNMENT)
    section_headers, bodies, addresses = [], [], []
    for section, name in zip(sections, names, strict=True):
        raw_size = _align(len(section.data), FILE_ALIGNMENT)
        addresses.append(virtual)
        section_headers.append(SECTION_HEADER.pack({
            "name": name.ljust(8, b"\0"),
            "virtual_size": len(section.data), "virtual_address": virtual,
            "size_of_raw_data": raw_size, "pointer_to_raw_data": raw_offset if raw_size else 0,
            "pointer_to_relocations": 0, "pointer_to_linenumbers": 0,
            "number_of_relocations": 0, "number_of_linenumbers": 0,
            "characteristics": section.characteristics,
        }))
        bodies.append(section.data.ljust(raw_size, b"\0"))
        raw_offset += raw_size
        virtual += _align(max(len(section.data), 1), SECTION_ALIGNMENT)
    # The entry point and BaseOfCode: the first code section's address; BaseOfData (PE32
    # only): the first other section's.
    is_code = [bool(s.characteristics & IMAGE_SCN_CNT_CODE) for s in sections]
    code = [a for a, c in zip(addresses, is_code, strict=True) if c]
    data = [a for a, c in zip(addresses, is_code, strict=True) if not c]
    entry = code[0] if code else 0
    fields: dict[str, int | bytes] = {
        "magic": PE32_MAGIC if pe32 else PE32_PLUS_MAGIC,
        "major_linker_version": 2, "minor_linker_version": 40,
        "size_of_code": sum(len(b) for b, c in zip(bodies, is_code, strict=True) if c),
        "size_of_initialized_data": sum(len(b) for b, c in zip(bodies, is_code, strict=True)
                                        if not c),
        "size_of_uninitialized_data": 0, "address_of_entry_point": entry,
        "base_of_code": entry, "image_base": 0, "section_alignment": SECTION_ALIGNMENT,
        "file_alignment": FILE_ALIGNMENT, "major_operating_system_version": 0,
        "minor_operating_system_version": 0, "major_image_version": 0,
        "minor_image_version": 0, "major_subsystem_version": 0, "minor_subsystem_version": 0,
        "win32_version_value": 0, "size_of_image": virtual, "size_of_headers": headers,
        "check_sum": 0, "subsystem": subsystem, "dll_characteristics": 0x0100,
        "size_of_stack_reserve": 0, "size_of_stack_commit": 0, "size_of_heap_reserve": 0,
        "size_of_heap_commit": 0, "loader_flags": 0, "number_of_rva_and_sizes": directories,
    }
    if pe32:
        fields["base_of_data"] = data[0] if data else 0
    optional = layout.pack(fields)
    coff = COFF_FILE_HEADER.pack({
        "machine": IMAGE_FILE_MACHINE_I386 if pe32 else IMAGE_FILE_MACHINE_AMD64,
        "number_of_sections": len(sections),
        "time_date_stamp": timestamp,
        "pointer_to_symbol_table": raw_offset if string_table else 0, "number_of_symbols": 0,
        "size_of_optional_header": optional_size,
        "characteristics": IMAGE_FILE_EXECUTABLE_IMAGE | (
            IMAGE_FILE_32BIT_MACHINE if pe32 else IMAGE_FILE_LARGE_ADDRESS_AWARE),
    })
    dos = bytearray(DOS_HEADER_SIZE)
    dos[0:2] = b"MZ"
    dos[E_LFANEW_OFFSET : E_LFANEW_OFFSET + 4] = pe_offset.to_bytes(4, "little")
    head = (bytes(dos) + PE_SIGNATURE + coff + optional + bytes(directories * DATA_DIRECTORY_SIZE)
            + b"".join(section_headers))
    return head.ljust(headers, b"\0") + b"".join(bodies) + string_table + trailer
