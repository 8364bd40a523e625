"""The SNP CPUID page: the CPUID values a guest may trust, checked by the firmware at launch.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), §8.17.2.6 "CPUID Reporting"
and Table 14 "CPUID_FUNCTION Structure"; the page (PAGE_TYPE_CPUID) is a 16-byte header
``{u32 count; u32 reserved; u64 reserved}`` followed by up to 64 functions of 48 bytes
``{u32 eax_in; u32 ecx_in; u64 xcr0_in; u64 xss_in; u32 eax; u32 ebx; u32 ecx; u32 edx;
u64 reserved}``; the rest of the 4 KiB page is zero. Little-endian.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, reserved, u32, u64

CPUID_PAGE_SIZE = 0x1000
CPUID_COUNT_MAX = 64
HEADER_SIZE = 0x10
FUNCTION_SIZE = 0x30
TABLE_END = HEADER_SIZE + CPUID_COUNT_MAX * FUNCTION_SIZE

CPUID_HEADER_LAYOUT = Layout(
    "SNP CPUID page header", HEADER_SIZE, [u32("count", 0x0), reserved(0x4, 0xC)]
)
CPUID_FUNCTION_LAYOUT = Layout(
    "CPUID_FUNCTION",
    FUNCTION_SIZE,
    [
        u32("eax_in", 0x00),
        u32("ecx_in", 0x04),
        u64("xcr0_in", 0x08),
        u64("xss_in", 0x10),
        u32("eax", 0x18),
        u32("ebx", 0x1C),
        u32("ecx", 0x20),
        u32("edx", 0x24),
        reserved(0x28, 8),
    ],
)


@dataclass(frozen=True)
class CpuidFunction:
    """One CPUID leaf/subleaf (with the XCR0/XSS it applies to) and its four output registers."""

    eax_in: int
    ecx_in: int = 0
    xcr0_in: int = 0
    xss_in: int = 0
    eax: int = 0
    ebx: int = 0
    ecx: int = 0
    edx: int = 0

    def __post_init__(self) -> None:
        for name in ("eax_in", "ecx_in", "eax", "ebx", "ecx", "edx"):
            if not 0 <= getattr(self, name) < 1 << 32:
                raise UsageError(f"CPUID function {name} is a u32")
        if not (0 <= self.xcr0_in < 1 << 64 and 0 <= self.xss_in < 1 << 64):
            raise UsageError("CPUID function XCR0_IN/XSS_IN are u64 values")

    @property
    def key(self) -> tuple[int, int]:
        return (self.eax_in, self.ecx_in)

    @property
    def registers(self) -> tuple[int, int, int, int]:
        return (self.eax, self.ebx, self.ecx, self.edx)

    @classmethod
    def from_bytes(cls, data: bytes) -> CpuidFunction:
        values = CPUID_FUNCTION_LAYOUT.unpack(data)
        return cls(**{k: v for k, v in values.items() if isinstance(v, int)})

    def to_bytes(self) -> bytes:
        return CPUID_FUNCTION_LAYOUT.pack(
            {
                "eax_in": self.eax_in,
                "ecx_in": self.ecx_in,
                "xcr0_in": self.xcr0_in,
                "xss_in": self.xss_in,
                "eax": self.eax,
                "ebx": self.ebx,
                "ecx": self.ecx,
                "edx": self.edx,
            }
        )


@dataclass(frozen=True)
class CpuidPage:
    """The functions of a CPUID page, in table order."""

    functions: tuple[CpuidFunction, ...]

    def __post_init__(self) -> None:
        if len(self.functions) > CPUID_COUNT_MAX:
            raise UsageError(f"a CPUID page holds at most {CPUID_COUNT_MAX} functions")

    def lookup(self, eax_in: int, ecx_in: int = 0) -> CpuidFunction | None:
        return next((f for f in self.functions if f.key == (eax_in, ecx_in)), None)

    @classmethod
    def from_bytes(cls, data: bytes) -> CpuidPage:
        if len(data) != CPUID_PAGE_SIZE:
            raise FormatError(f"SNP CPUID page: expected 4096 bytes, got {len(data)}")
        count = CPUID_HEADER_LAYOUT.unpack(data[:HEADER_SIZE])["count"]
        if not isinstance(count, int) or count > CPUID_COUNT_MAX:
            raise FormatError(f"SNP CPUID page: COUNT {count!r} exceeds {CPUID_COUNT_MAX}")
        end = HEADER_SIZE + count * FUNCTION_SIZE
        if any(data[end:]):
            raise FormatError("SNP CPUID page: bytes after the last function are not zero")
        return cls(
            tuple(
                CpuidFunction.from_bytes(data[off : off + FUNCTION_SIZE])
                for off in range(HEADER_SIZE, end, FUNCTION_SIZE)
            )
        )

    def to_bytes(self) -> bytes:
        body = CPUID_HEADER_LAYOUT.pack({"count": len(self.functions)}) + b"".join(
            f.to_bytes() for f in self.functions
        )
        return body + bytes(CPUID_PAGE_SIZE - len(body))
