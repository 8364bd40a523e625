"""SBAT: the .sbat CSV, SbatLevel payloads and shim's .sbatlevel section, round trips."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.pe.sbat import SbatEntry, SbatLevel, SbatLevelSection, SbatSection

GRUB_SBAT = (
    b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"
    b"grub,5,Free Software Foundation,grub,2.06,https://www.gnu.org/software/grub/\n"
    b"grub.debian,5,Debian,grub2,2.06-13+deb12u2,https://tracker.debian.org/pkg/grub2\n"
)
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz.-_0123456789", min_size=1, max_size=12)
FIELDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz .:/-+~0123456789", max_size=20)


def test_grub_sbat_parses_and_round_trips() -> None:
    section = SbatSection.parse(GRUB_SBAT + b"\0\0")
    assert [e.component_name for e in section.entries] == ["sbat", "grub", "grub.debian"]
    assert section.generation_of("grub") == 5
    assert section.generation_of("shim") is None
    assert section.to_bytes() == GRUB_SBAT


def test_sbat_level_parses_and_round_trips() -> None:
    payload = b"sbat,1,2025021800\nshim,4\ngrub,5\n"
    level = SbatLevel.parse(payload)
    assert level.datestamp == "2025021800"
    assert level.minimums == (("shim", 4), ("grub", 5))
    assert level.to_bytes() == payload


@pytest.mark.parametrize("bad", [
    b"", b"sbat,1\n", b"sbat,x,SBAT Version,sbat,1,u\n", b"grub,5,a,b,c\n", b"\xff\xfe",
])
def test_bad_sbat_sections(bad: bytes) -> None:
    with pytest.raises(FormatError):
        SbatSection.parse(bad)


@pytest.mark.parametrize("bad", [b"", b"shim,4\n", b"sbat,1,2025\nshim\n", b"sbat,1,1\ngrub,x\n"])
def test_bad_sbat_levels(bad: bytes) -> None:
    with pytest.raises(FormatError):
        SbatLevel.parse(bad)


entries = st.builds(SbatEntry, NAMES, st.integers(0, 10**6), FIELDS, FIELDS, FIELDS, FIELDS)
levels = st.builds(SbatLevel, st.text(alphabet="0123456789", min_size=1, max_size=10),
                   st.lists(st.tuples(NAMES, st.integers(0, 10**6)), max_size=5).map(tuple))


@given(st.lists(entries, min_size=1, max_size=6))
def test_sbat_section_round_trip(items: list[SbatEntry]) -> None:
    section = SbatSection(tuple(items))
    assert SbatSection.parse(section.to_bytes()) == section


@given(levels, levels)
def test_sbatlevel_section_round_trip(previous: SbatLevel, latest: SbatLevel) -> None:
    section = SbatLevelSection(previous, latest)
    assert SbatLevelSection.parse(section.to_bytes()) == section


@given(st.binary(max_size=200))
def test_random_bytes_only_raise_format_errors(blob: bytes) -> None:
    for parse in (SbatSection.parse, SbatLevel.parse, SbatLevelSection.parse):
        with contextlib.suppress(FormatError):
            parse(blob)
