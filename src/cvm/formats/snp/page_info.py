"""PAGE_INFO: the 0x70-byte record SNP_LAUNCH_UPDATE hashes into the launch digest.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), section 8.17.2
"SNP_LAUNCH_UPDATE", Table 67 "Layout of the PAGE_INFO Structure". For every 4 KiB page
given to SNP_LAUNCH_UPDATE the firmware sets the launch digest to SHA-384 of this record,
which holds the previous digest, the SHA-384 of the page contents (for NORMAL and VMSA
pages; zero for the other types), the page type and the guest-physical address.

All integers are little-endian. Bytes 0x64..0x66 are the VMPL3, VMPL2 and VMPL1 permission
masks in that order; QEMU-style launches measure them as zero.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, reserved, u8, u16, u64

PAGE_INFO_SIZE = 0x70
DIGEST_SIZE = 48
PAGE_SIZE = 0x1000
ZERO_DIGEST = bytes(DIGEST_SIZE)
# QEMU/KVM record VMSA pages at GPA (u64)-1, page-aligned and cut to bits 51:0.
VMSA_GPA = 0x0000_FFFF_FFFF_F000


# LENGTH, PAGE_TYPE, IMI_PAGE, VMPL3/2/1_PERMS, reserved, GPA (bytes 0x60..0x6F).
_TAIL = struct.Struct("<HBBBBBBQ")


class PageType(IntEnum):
    """SNP_LAUNCH_UPDATE PAGE_TYPE values (56860 Table 66)."""

    NORMAL = 0x01
    VMSA = 0x02
    ZERO = 0x03
    UNMEASURED = 0x04
    SECRETS = 0x05
    CPUID = 0x06

    @property
    def measures_contents(self) -> bool:
        """Whether the page's SHA-384 goes into CONTENTS (else 48 zero bytes)."""
        return self in MEASURED_TYPES


# The page types whose contents are measured (56860 Table 67: CONTENTS is the page's SHA-384
# for NORMAL and VMSA pages, zero for the others). The functions below test membership here
# directly: the same work as the property, and within reach of mutation testing.
MEASURED_TYPES = frozenset((PageType.NORMAL, PageType.VMSA))


PAGE_INFO_LAYOUT = Layout(
    "PAGE_INFO",
    PAGE_INFO_SIZE,
    [
        raw("digest_cur", 0x00, DIGEST_SIZE),
        raw("contents", 0x30, DIGEST_SIZE),
        u16("length", 0x60),
        u8("page_type", 0x62),
        u8("imi_page", 0x63),
        u8("vmpl3_perms", 0x64),
        u8("vmpl2_perms", 0x65),
        u8("vmpl1_perms", 0x66),
        reserved(0x67, 1),
        u64("gpa", 0x68),
    ],
)


@dataclass(frozen=True)
class PageInfo:
    """One PAGE_INFO record (56860 Table 67)."""

    digest_cur: bytes
    contents: bytes
    page_type: PageType
    gpa: int
    imi_page: bool = False
    vmpl3_perms: int = 0
    vmpl2_perms: int = 0
    vmpl1_perms: int = 0

    def __post_init__(self) -> None:
        if len(self.digest_cur) != DIGEST_SIZE or len(self.contents) != DIGEST_SIZE:
            raise UsageError("PAGE_INFO digests must be 48 bytes")
        if self.gpa % PAGE_SIZE:
            raise UsageError(f"PAGE_INFO GPA {self.gpa:#x} is not page-aligned")

    @classmethod
    def from_bytes(cls, data: bytes) -> PageInfo:
        values = PAGE_INFO_LAYOUT.unpack(data)
        ints = {k: v for k, v in values.items() if isinstance(v, int)}
        if ints["length"] != PAGE_INFO_SIZE:
            raise FormatError(f"PAGE_INFO: LENGTH is {ints['length']:#x}, expected 0x70")
        try:
            page_type = PageType(ints["page_type"])
        except ValueError:
            raise FormatError(f"PAGE_INFO: unknown PAGE_TYPE {ints['page_type']:#x}") from None
        imi = ints["imi_page"]
        if imi > 1:
            raise FormatError("PAGE_INFO: reserved bits 7:1 of byte 0x63 are not zero")
        gpa = ints["gpa"]
        if gpa % PAGE_SIZE:
            raise FormatError(f"PAGE_INFO: GPA {gpa:#x} is not page-aligned")
        return cls(
            digest_cur=_blob(values["digest_cur"]),
            contents=_blob(values["contents"]),
            page_type=page_type,
            gpa=gpa,
            imi_page=bool(imi),
            vmpl3_perms=ints["vmpl3_perms"],
            vmpl2_perms=ints["vmpl2_perms"],
            vmpl1_perms=ints["vmpl1_perms"],
        )

    def to_bytes(self) -> bytes:
        return PAGE_INFO_LAYOUT.pack(
            {
                "digest_cur": self.digest_cur,
                "contents": self.contents,
                "length": PAGE_INFO_SIZE,
                "page_type": int(self.page_type),
                "imi_page": int(self.imi_page),
                "vmpl3_perms": self.vmpl3_perms,
                "vmpl2_perms": self.vmpl2_perms,
                "vmpl1_perms": self.vmpl1_perms,
                "gpa": self.gpa,
            }
        )

    def measure(self) -> bytes:
        """The launch digest after this page: SHA-384 of the record."""
        return hashlib.sha384(self.to_bytes()).digest()


def _blob(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise FormatError("PAGE_INFO: expected a byte field")
    return value


def contents_digest(page_type: PageType, page: bytes) -> bytes:
    """CONTENTS for ``page``: its SHA-384 for NORMAL/VMSA pages, zeros for the other types."""
    if len(page) != PAGE_SIZE:
        raise UsageError(f"a launch page is {PAGE_SIZE:#x} bytes, got {len(page):#x}")
    return hashlib.sha384(page).digest() if page_type in MEASURED_TYPES else ZERO_DIGEST


def measure_record(
    digest: bytes, contents: bytes, page_type: PageType, gpa: int, imi_page: bool = False
) -> bytes:
    """SHA-384 of the PAGE_INFO of one page with zero VMPL permissions: the next launch digest.

    The bytes are those :meth:`PageInfo.to_bytes` builds for the same values, packed at once
    (the hot path of the firmware and of the prediction), with the checks of :class:`PageInfo`.
    """
    if len(digest) != DIGEST_SIZE or len(contents) != DIGEST_SIZE:
        raise UsageError("PAGE_INFO digests must be 48 bytes")
    if gpa % PAGE_SIZE or not 0 <= gpa < 1 << 64:
        raise UsageError(f"PAGE_INFO GPA {gpa:#x} is not page-aligned")
    tail = _TAIL.pack(PAGE_INFO_SIZE, page_type, imi_page, 0, 0, 0, 0, gpa)
    return hashlib.sha384(digest + contents + tail).digest()


def extend(digest: bytes, page_type: PageType, gpa: int, page: bytes | None = None) -> bytes:
    """Fold one page into the launch digest ``digest`` and return the new digest.

    ``page`` (4 KiB) is required for NORMAL and VMSA pages and ignored for the others, whose
    CONTENTS field is 48 zero bytes. Builds the same bytes as :meth:`PageInfo.to_bytes` with
    zero permissions and IMI_PAGE clear (:func:`measure_record`).
    """
    if page_type in MEASURED_TYPES:
        if page is None:
            raise UsageError(f"a {page_type.name} page needs its contents to be measured")
        contents = contents_digest(page_type, page)
    else:
        contents = ZERO_DIGEST
    return measure_record(digest, contents, page_type, gpa)
