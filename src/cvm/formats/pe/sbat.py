"""SBAT metadata: the ``.sbat`` section CSV, the ``SbatLevel`` revocation payload, ``.sbatlevel``.

rhboot/shim ``SBAT.md`` (2021, "UEFI shim bootloader secure boot life-cycle improvements"):
a ``.sbat`` section holds CSV lines
``component_name,component_generation,vendor_name,vendor_package_name,vendor_version,vendor_url``
whose first line is the ``sbat,1,SBAT Version,...`` self-description. The ``SbatLevel`` variable
(SHIM_LOCK_GUID) holds ``sbat,1,<datestamp>`` then ``component_name,min_generation`` lines;
``SbatLevel_Variable.txt`` lists the published levels. shim's own ``.sbatlevel`` section is
``{u32 version = 0; u32 previous; u32 latest}`` with the two offsets counted from byte 4 and
each pointing at a NUL-terminated SbatLevel payload.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.wire import Layout, u32

SBAT_SECTION_COLUMNS = 6
SBAT_SELF_ENTRY = (
    "sbat", 1, "SBAT Version", "sbat", "1", "https://github.com/rhboot/shim/blob/main/SBAT.md",
)
SBATLEVEL_SECTION_HEADER = Layout(".sbatlevel header", 0xC, [
    u32("version", 0x0),
    u32("previous", 0x4),
    u32("latest", 0x8),
])
SBATLEVEL_OFFSET_BASE = 4


def _text(data: bytes, what: str) -> str:
    body = data.split(b"\0", 1)[0]
    try:
        return body.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(f"{what}: not ASCII text") from None


def _generation(text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise FormatError(f"{what}: generation {text!r} is not a decimal number")
    return int(text)


@dataclass(frozen=True)
class SbatEntry:
    """One ``.sbat`` line: a component, its generation and who ships which version of it."""

    component_name: str
    component_generation: int
    vendor_name: str
    vendor_package_name: str
    vendor_version: str
    vendor_url: str

    def to_line(self) -> str:
        return ",".join([
            self.component_name, str(self.component_generation), self.vendor_name,
            self.vendor_package_name, self.vendor_version, self.vendor_url,
        ])


@dataclass(frozen=True)
class SbatSection:
    """The ``.sbat`` section of an image: its entries in order (the first one is ``sbat``)."""

    entries: tuple[SbatEntry, ...]

    @classmethod
    def parse(cls, data: bytes) -> SbatSection:
        entries = []
        for number, line in enumerate(_text(data, ".sbat").splitlines(), 1):
            if not line:
                continue
            fields = line.split(",")
            if len(fields) != SBAT_SECTION_COLUMNS or not fields[0]:
                raise FormatError(
                    f".sbat line {number}: expected {SBAT_SECTION_COLUMNS} columns, "
                    f"got {len(fields)}"
                )
            generation = _generation(fields[1], f".sbat line {number}")
            entries.append(SbatEntry(fields[0], generation, *fields[2:]))
        if not entries:
            raise FormatError(".sbat: no entries")
        return cls(tuple(entries))

    def to_bytes(self) -> bytes:
        return "".join(entry.to_line() + "\n" for entry in self.entries).encode("ascii")

    def generation_of(self, component: str) -> int | None:
        return next(
            (e.component_generation for e in self.entries if e.component_name == component), None
        )


@dataclass(frozen=True)
class SbatLevel:
    """An ``SbatLevel`` payload: a datestamp and the minimum generation of each component."""

    datestamp: str
    minimums: tuple[tuple[str, int], ...]
    version: int = 1

    @classmethod
    def parse(cls, data: bytes) -> SbatLevel:
        lines = [line for line in _text(data, "SbatLevel").splitlines() if line]
        if not lines:
            raise FormatError("SbatLevel: empty")
        head = lines[0].split(",")
        if len(head) != 3 or head[0] != "sbat":
            raise FormatError(f"SbatLevel: first line {lines[0]!r} is not sbat,<ver>,<date>")
        version = _generation(head[1], "SbatLevel header")
        minimums = []
        for number, line in enumerate(lines[1:], 2):
            fields = line.split(",")
            if len(fields) != 2 or not fields[0]:
                raise FormatError(f"SbatLevel line {number}: expected component,generation")
            minimums.append((fields[0], _generation(fields[1], f"SbatLevel line {number}")))
        return cls(head[2], tuple(minimums), version)

    def to_bytes(self) -> bytes:
        lines = [f"sbat,{self.version},{self.datestamp}"]
        lines += [f"{name},{generation}" for name, generation in self.minimums]
        return "".join(line + "\n" for line in lines).encode("ascii")


@dataclass(frozen=True)
class SbatLevelSection:
    """shim's ``.sbatlevel`` section: the previous and the latest SbatLevel it can apply."""

    previous: SbatLevel
    latest: SbatLevel
    version: int = 0

    @classmethod
    def parse(cls, data: bytes) -> SbatLevelSection:
        size = SBATLEVEL_SECTION_HEADER.size
        if len(data) < size:
            raise FormatError(f".sbatlevel: {len(data)} bytes, header needs {size}")
        header = SBATLEVEL_SECTION_HEADER.unpack(data[:size])
        payloads = []
        for name in ("previous", "latest"):
            offset = header[name]
            assert isinstance(offset, int)
            start = SBATLEVEL_OFFSET_BASE + offset
            if start < size or start >= len(data):
                raise FormatError(f".sbatlevel: {name} offset {offset:#x} outside the section")
            payloads.append(SbatLevel.parse(data[start:]))
        version = header["version"]
        assert isinstance(version, int)
        return cls(payloads[0], payloads[1], version)

    def to_bytes(self) -> bytes:
        previous = self.previous.to_bytes() + b"\0"
        latest = self.latest.to_bytes() + b"\0"
        first = SBATLEVEL_SECTION_HEADER.size - SBATLEVEL_OFFSET_BASE
        header = SBATLEVEL_SECTION_HEADER.pack({
            "version": self.version, "previous": first, "latest": first + len(previous),
        })
        return header + previous + latest
