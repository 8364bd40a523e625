"""The LUKS2 binary header: the first 4096 bytes of each of the two header copies.

LUKS2 On-Disk Format Specification v1.1.4 (cryptsetup ``docs/on-disk-format-luks2.pdf``),
section 2.1, figure 2 ``luks2_hdr_disk``. All integers are **big-endian**. The primary copy
starts at offset 0 with magic ``LUKS\\xba\\xbe``; the secondary copy starts at ``hdr_size``
with magic ``SKUL\\xba\\xbe``. ``hdr_size`` covers the binary header and its JSON area and is
one of 16 KiB, 32 KiB ... 4 MiB (section 2.2). The checksum (``csum_alg`` over the whole
``hdr_size`` bytes with the ``csum`` field zeroed) is computed by
:mod:`cvm.formats.luks2.header_copy`.

Text fields are NUL-terminated and NUL-padded; :meth:`BinaryHeader.from_bytes` rejects
anything after the terminator, so ``from_bytes(b).to_bytes() == b`` for every accepted ``b``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, reserved, u16, u64

BINARY_HEADER_SIZE = 0x1000
PRIMARY_MAGIC = b"LUKS\xba\xbe"
SECONDARY_MAGIC = b"SKUL\xba\xbe"
LUKS2_VERSION = 2
HEADER_SIZES = tuple(0x4000 << shift for shift in range(9))
CSUM_ALGS = {"sha256": 32, "sha512": 64, "sha1": 20}
LABEL_SIZE = 48
UUID_FIELD_SIZE = 40
UUID_TEXT_SIZE = 36

LAYOUT = Layout(
    "LUKS2 binary header",
    BINARY_HEADER_SIZE,
    [
        raw("magic", 0x000, 6),
        u16("version", 0x006),
        u64("hdr_size", 0x008),
        u64("seqid", 0x010),
        raw("label", 0x018, LABEL_SIZE),
        raw("csum_alg", 0x048, 32),
        raw("salt", 0x068, 64),
        raw("uuid", 0x0A8, UUID_FIELD_SIZE),
        raw("subsystem", 0x0D0, 48),
        u64("hdr_offset", 0x100),
        reserved(0x108, 184),
        raw("csum", 0x1C0, 64),
        reserved(0x200, 0xE00),
    ],
    endian="big",
)
CSUM_SPAN = LAYOUT.span("csum")


def _text(field: str, data: bytes) -> str:
    end = data.find(b"\0")
    if end < 0:
        raise FormatError(f"LUKS2 binary header: {field} is not NUL-terminated")
    if any(data[end:]):
        raise FormatError(f"LUKS2 binary header: {field} has bytes after its terminator")
    try:
        return data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(f"LUKS2 binary header: {field} is not ASCII") from None


def _field(field: str, text: str, size: int) -> bytes:
    data = text.encode("ascii", errors="replace")
    if len(data) >= size or "\0" in text or not text.isascii():
        raise UsageError(f"LUKS2 {field} {text!r} must be ASCII and shorter than {size} bytes")
    return data.ljust(size, b"\0")


@dataclass(frozen=True)
class BinaryHeader:
    """One binary header (spec section 2.1); ``secondary`` selects the magic."""

    secondary: bool
    hdr_size: int
    seqid: int
    label: str
    csum_alg: str
    salt: bytes
    uuid: str
    subsystem: str
    hdr_offset: int
    csum: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> BinaryHeader:
        if bytes(data[:6]) not in (PRIMARY_MAGIC, SECONDARY_MAGIC):
            raise FormatError("LUKS2 binary header: bad magic (not a LUKS device)")
        values = LAYOUT.unpack(data)
        magic = values["magic"]
        if values["version"] != LUKS2_VERSION:
            raise FormatError(f"LUKS2 binary header: version {values['version']!r} is not 2")
        hdr_size = int(values["hdr_size"])
        if hdr_size not in HEADER_SIZES:
            raise FormatError(f"LUKS2 binary header: hdr_size {hdr_size} is not allowed")
        csum_alg = _text("csum_alg", bytes(values["csum_alg"]))
        if csum_alg not in CSUM_ALGS:
            raise FormatError(f"LUKS2 binary header: unsupported checksum {csum_alg!r}")
        secondary = magic == SECONDARY_MAGIC
        hdr_offset = int(values["hdr_offset"])
        if hdr_offset != (hdr_size if secondary else 0):
            raise FormatError(
                f"LUKS2 binary header: hdr_offset {hdr_offset} does not match the "
                f"{'secondary' if secondary else 'primary'} copy"
            )
        csum = bytes(values["csum"])
        if any(csum[CSUM_ALGS[csum_alg] :]):
            raise FormatError("LUKS2 binary header: checksum field has bytes past the digest")
        uuid = _text("uuid", bytes(values["uuid"]))
        if len(uuid) > UUID_TEXT_SIZE:
            raise FormatError("LUKS2 binary header: uuid longer than 36 characters")
        return cls(
            secondary=secondary,
            hdr_size=hdr_size,
            seqid=int(values["seqid"]),
            label=_text("label", bytes(values["label"])),
            csum_alg=csum_alg,
            salt=bytes(values["salt"]),
            uuid=uuid,
            subsystem=_text("subsystem", bytes(values["subsystem"])),
            hdr_offset=hdr_offset,
            csum=csum,
        )

    def to_bytes(self) -> bytes:
        if self.csum_alg not in CSUM_ALGS:
            raise UsageError(f"unsupported LUKS2 checksum {self.csum_alg!r}")
        if len(self.csum) != 64 or any(self.csum[CSUM_ALGS[self.csum_alg] :]):
            raise UsageError("LUKS2 checksum field must be 64 bytes, zero past the digest")
        if len(self.uuid) > UUID_TEXT_SIZE:
            raise UsageError("LUKS2 uuid must be at most 36 characters")
        return LAYOUT.pack(
            {
                "magic": SECONDARY_MAGIC if self.secondary else PRIMARY_MAGIC,
                "version": LUKS2_VERSION,
                "hdr_size": self.hdr_size,
                "seqid": self.seqid,
                "label": _field("label", self.label, LABEL_SIZE),
                "csum_alg": _field("csum_alg", self.csum_alg, 32),
                "salt": self.salt,
                "uuid": _field("uuid", self.uuid, UUID_FIELD_SIZE),
                "subsystem": _field("subsystem", self.subsystem, 48),
                "hdr_offset": self.hdr_offset,
                "csum": self.csum,
            }
        )
