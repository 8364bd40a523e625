"""SBAT's CSV checks one by one: what a malformed line does (its class and message, naming the
line), generation numbers, the NUL that ends the text, SbatLevel's header and lines, and the
``.sbatlevel`` section's offsets."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.formats.pe.sbat import SBAT_SELF_ENTRY, SbatEntry, SbatLevel, SbatLevelSection, SbatSection

SELF = b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"
GRUB = b"grub,3,Free Software Foundation,grub,2.06,https://www.gnu.org/software/grub/\n"


def _section_refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        SbatSection.parse(data)
    assert str(caught.value) == message


def _level_refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        SbatLevel.parse(data)
    assert str(caught.value) == message


# --- the .sbat section ----------------------------------------------------------------------

def test_each_line_is_an_entry_of_six_columns() -> None:
    section = SbatSection.parse(SELF + GRUB)
    assert section.entries == (
        SbatEntry(*SBAT_SELF_ENTRY),
        SbatEntry("grub", 3, "Free Software Foundation", "grub", "2.06",
                  "https://www.gnu.org/software/grub/"))
    assert section.generation_of("grub") == 3 and section.generation_of("sbat") == 1


@pytest.mark.parametrize(("line", "columns"), [
    (b"grub,3,a,b,c", 5), (b"grub,3,a,b,c,d,e", 7), (b"grub", 1), (b",3,a,b,c,d", 6)])
def test_a_line_without_six_columns_or_a_name_names_its_number(line: bytes, columns: int) -> None:
    _section_refused(SELF + GRUB + line + b"\n",
                     f".sbat line 3: expected 6 columns, got {columns}")


@pytest.mark.parametrize("generation", ["", "x", "-1", "+1", "1.0", " 1", "0x10"])
def test_a_generation_must_be_a_decimal_number(generation: str) -> None:
    line = f"grub,{generation},a,b,c,d\n".encode()
    _section_refused(SELF + line, f".sbat line 2: generation {generation!r} is not a decimal "
                                  "number")


def test_generations_are_read_as_decimal() -> None:
    section = SbatSection.parse(SELF + b"grub,0010,a,b,c,d\nshim,0,a,b,c,d\n")
    assert section.generation_of("grub") == 10 and section.generation_of("shim") == 0


def test_empty_lines_are_skipped_and_still_counted() -> None:
    section = SbatSection.parse(b"\n" + SELF + b"\r\n" + GRUB)
    assert [e.component_name for e in section.entries] == ["sbat", "grub"]
    _section_refused(b"\n\n" + SELF + b"bad\n", ".sbat line 4: expected 6 columns, got 1")


def test_the_text_ends_at_the_first_nul() -> None:
    section = SbatSection.parse(SELF + b"\0" + b"grub,x\n")
    assert len(section.entries) == 1
    _section_refused(b"\0" + SELF, ".sbat: no entries")
    _section_refused(b"\n\n", ".sbat: no entries")


def test_non_ascii_text_is_refused() -> None:
    _section_refused(SELF + "grub,1,\u00e9,b,c,d\n".encode(), ".sbat: not ASCII text")
    _level_refused(b"sbat,1,2024\ngr\xffub,1\n", "SbatLevel: not ASCII text")


def test_the_first_of_two_entries_of_a_component_gives_its_generation() -> None:
    section = SbatSection.parse(SELF + b"grub,2,a,b,c,d\ngrub,9,a,b,c,d\n")
    assert section.generation_of("grub") == 2
    assert section.generation_of("Grub") is None


def test_the_written_section() -> None:
    section = SbatSection.parse(SELF + GRUB)
    assert section.to_bytes() == SELF + GRUB
    assert SbatEntry("a", 7, "b", "c", "d", "e").to_line() == "a,7,b,c,d,e"


# --- SbatLevel ------------------------------------------------------------------------------

def test_a_level_is_a_header_then_component_minimums() -> None:
    level = SbatLevel.parse(b"sbat,1,2023012900\n\nshim,2\r\ngrub,3\n\0garbage")
    assert level == SbatLevel("2023012900", (("shim", 2), ("grub", 3)), 1)
    assert SbatLevel.parse(b"sbat,2,2021030218\n").version == 2
    assert SbatLevel("2024", (("shim", 4),), 3).to_bytes() == b"sbat,3,2024\nshim,4\n"


@pytest.mark.parametrize("head", [b"sbat,1", b"sbat,1,2024,x", b"sba,1,2024", b"grub,1,2024"])
def test_the_header_line(head: bytes) -> None:
    _level_refused(head + b"\nshim,1\n",
                   f"SbatLevel: first line {head.decode()!r} is not sbat,<ver>,<date>")


def test_an_empty_level_is_refused() -> None:
    _level_refused(b"", "SbatLevel: empty")
    _level_refused(b"\n\r\n\0sbat,1,2024\n", "SbatLevel: empty")
    _level_refused(b"sbat,v,2024\n", "SbatLevel header: generation 'v' is not a decimal number")


@pytest.mark.parametrize("line", [b"shim", b"shim,1,2", b",1"])
def test_a_minimum_is_component_comma_generation(line: bytes) -> None:
    _level_refused(b"sbat,1,2024\ngrub,1\n" + line + b"\n",
                   "SbatLevel line 3: expected component,generation")


def test_a_minimum_generation_must_be_a_decimal_number() -> None:
    _level_refused(b"sbat,1,2024\ngrub,-2\n",
                   "SbatLevel line 2: generation '-2' is not a decimal number")


# --- the .sbatlevel section -----------------------------------------------------------------

PREVIOUS = SbatLevel("2022052400", (("shim", 2), ("grub", 2)))
LATEST = SbatLevel("2024010900", (("shim", 4), ("grub", 3)))


def test_the_sbatlevel_section_layout() -> None:
    data = SbatLevelSection(PREVIOUS, LATEST).to_bytes()
    previous = PREVIOUS.to_bytes() + b"\0"
    assert data[:12] == (0).to_bytes(4, "little") + (8).to_bytes(4, "little") + \
        (8 + len(previous)).to_bytes(4, "little")
    assert data[12:] == previous + LATEST.to_bytes() + b"\0"
    assert SbatLevelSection.parse(data) == SbatLevelSection(PREVIOUS, LATEST, 0)
    assert SbatLevelSection.parse(data + bytes(100)).latest == LATEST


def test_the_offsets_count_from_byte_four() -> None:
    data = bytearray(SbatLevelSection(PREVIOUS, LATEST).to_bytes())
    data[4:8] = data[8:12]   # previous now points at the latest payload
    data[0:4] = (7).to_bytes(4, "little")
    section = SbatLevelSection.parse(bytes(data))
    assert section.previous == LATEST and section.version == 7


def test_a_short_sbatlevel_section_is_refused() -> None:
    with pytest.raises(FormatError) as caught:
        SbatLevelSection.parse(bytes(11))
    assert str(caught.value) == ".sbatlevel: 11 bytes, header needs 12"


@pytest.mark.parametrize(("name", "offset"), [("previous", 7), ("latest", 0xFFFF)])
def test_an_offset_outside_the_section_is_refused(name: str, offset: int) -> None:
    data = bytearray(SbatLevelSection(PREVIOUS, LATEST).to_bytes())
    position = 4 if name == "previous" else 8
    data[position : position + 4] = offset.to_bytes(4, "little")
    with pytest.raises(FormatError) as caught:
        SbatLevelSection.parse(bytes(data))
    assert str(caught.value) == f".sbatlevel: {name} offset {offset:#x} outside the section"


def test_the_offset_limits() -> None:
    payload = b"sbat,1,2024\n"
    data = (0).to_bytes(4, "little") + (8).to_bytes(4, "little") + \
        (8 + len(payload) - 1).to_bytes(4, "little") + payload
    # The last offset that starts inside the section: its one byte is "\n", an empty level.
    with pytest.raises(FormatError, match="SbatLevel: empty"):
        SbatLevelSection.parse(data)
    data = data[:8] + (8 + len(payload)).to_bytes(4, "little") + payload
    with pytest.raises(FormatError, match="latest offset 0x14 outside"):
        SbatLevelSection.parse(data)


def test_a_sbatlevel_section_of_its_header_alone_has_no_payload() -> None:
    header = (0).to_bytes(4, "little") + (8).to_bytes(4, "little") + (8).to_bytes(4, "little")
    with pytest.raises(FormatError) as caught:
        SbatLevelSection.parse(header)
    assert str(caught.value) == ".sbatlevel: previous offset 0x8 outside the section"
