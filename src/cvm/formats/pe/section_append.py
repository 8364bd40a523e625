"""Append sections to an existing PE/COFF image, as ``objcopy --add-section`` or ``ukify`` do.

A unified kernel image is systemd's EFI stub with the kernel, the initrd, the command line and
the OS release appended as sections (``.linux``, ``.initrd``, ``.cmdline``, ``.osrel``; UAPI
"Unified Kernel Image" specification). Each new section gets the next free virtual address at
``SectionAlignment`` and its raw data at the end of the file at ``FileAlignment``; the section
table must have room for the new headers before the first section's data (``SizeOfHeaders``).
``NumberOfSections``, ``SizeOfImage`` and ``SizeOfInitializedData`` are updated (Microsoft "PE
Format", COFF File Header and Optional Header). A signed image is refused: its signature would
no longer cover it — strip or re-sign.
"""

from __future__ import annotations

from collections.abc import Sequence

from cvm.errors import UsageError
from cvm.formats.pe.builder import DATA
from cvm.formats.pe.image import COFF_FILE_HEADER, OPTIONAL_HEADER_PE32, SECTION_HEADER, PeImage

SECTION_NAME_SIZE = 8


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def _put_u32(data: bytearray, offset: int, value: int) -> None:
    data[offset : offset + 4] = value.to_bytes(4, "little")


def append_sections(image: bytes, sections: Sequence[tuple[str, bytes]],
                    characteristics: int = DATA) -> bytes:
    """``image`` with ``sections`` (name, contents) added after its own, in order."""
    pe = PeImage.parse(image)
    if pe.certificates:
        raise UsageError("the image is signed: appending sections would void its signature")
    file_alignment = pe.optional["file_alignment"]
    section_alignment = pe.optional["section_alignment"]
    table_end = pe.section_table_offset + SECTION_HEADER.size * (len(pe.sections) + len(sections))
    first_data = min((s.pointer_to_raw_data for s in pe.sections if s.size_of_raw_data),
                     default=pe.size_of_headers)
    if table_end > min(first_data, pe.size_of_headers):
        raise UsageError(f"the image's headers have no room for {len(sections)} more section "
                         "headers")
    out = bytearray(image)
    virtual_end = max(s.virtual_address + max(s.virtual_size, s.size_of_raw_data)
                      for s in pe.sections)
    added_raw = 0
    header_at = pe.section_table_offset + SECTION_HEADER.size * len(pe.sections)
    for name, contents in sections:
        encoded = name.encode("ascii")
        if not encoded or len(encoded) > SECTION_NAME_SIZE:
            raise UsageError(f"section name {name!r} must be 1 to 8 ASCII characters")
        virtual_address = _align(virtual_end, section_alignment)
        raw_size = _align(len(contents), file_alignment)
        out += bytes(_align(len(out), file_alignment) - len(out))
        pointer = len(out)
        out += contents + bytes(raw_size - len(contents))
        out[header_at : header_at + SECTION_HEADER.size] = SECTION_HEADER.pack({
            "name": encoded.ljust(SECTION_NAME_SIZE, b"\0"), "virtual_size": len(contents),
            "virtual_address": virtual_address, "size_of_raw_data": raw_size,
            "pointer_to_raw_data": pointer, "pointer_to_relocations": 0,
            "pointer_to_linenumbers": 0, "number_of_relocations": 0,
            "number_of_linenumbers": 0, "characteristics": characteristics,
        })
        header_at += SECTION_HEADER.size
        virtual_end = virtual_address + len(contents)
        added_raw += raw_size
    coff_at = pe.pe_offset + 4
    count_at = coff_at + COFF_FILE_HEADER.field("number_of_sections").offset
    out[count_at : count_at + 2] = (len(pe.sections) + len(sections)).to_bytes(2, "little")
    optional_at = pe.optional_header_offset
    _put_u32(out, optional_at + OPTIONAL_HEADER_PE32.field("size_of_image").offset,
             _align(virtual_end, section_alignment))
    initialized = OPTIONAL_HEADER_PE32.field("size_of_initialized_data").offset
    _put_u32(out, optional_at + initialized, pe.optional["size_of_initialized_data"] + added_raw)
    PeImage.parse(bytes(out))  # what is written must read back
    return bytes(out)
