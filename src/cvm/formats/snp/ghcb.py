"""The guest-hypervisor communication block (GHCB): the shared page of an SEV-ES/SNP guest.

Layout from the GHCB specification (AMD 56421, rev. 2.03, Table 3 "GHCB layout"); the
``valid_bitmap`` has one bit per 8-byte quadword of the save area (bit = offset / 8) telling
the host which registers the guest chose to expose. Everything the guest does not copy here
stays in its encrypted VMSA. ``from_bytes`` is strict: reserved ranges must be zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, reserved, u8, u16, u32, u64

GHCB_SIZE = 0x1000
SHARED_BUFFER_SIZE = 0x7F0
GHCB_PROTOCOL_VERSION = 2

GHCB_LAYOUT = Layout(
    "GHCB",
    GHCB_SIZE,
    [
        reserved(0x000, 0xCB),
        u8("cpl", 0x0CB),
        reserved(0x0CC, 0x74),
        u64("xss", 0x140),
        reserved(0x148, 0x18),
        u64("dr7", 0x160),
        reserved(0x168, 0x90),
        u64("rax", 0x1F8),
        reserved(0x200, 0x108),
        u64("rcx", 0x308),
        u64("rdx", 0x310),
        u64("rbx", 0x318),
        reserved(0x320, 0x70),
        u64("sw_exitcode", 0x390),
        u64("sw_exitinfo1", 0x398),
        u64("sw_exitinfo2", 0x3A0),
        u64("sw_scratch", 0x3A8),
        reserved(0x3B0, 0x38),
        u64("xcr0", 0x3E8),
        raw("valid_bitmap", 0x3F0, 0x10),
        u64("x87_state_gpa", 0x400),
        reserved(0x408, 0x3F8),
        raw("shared_buffer", 0x800, SHARED_BUFFER_SIZE),
        reserved(0xFF0, 0xA),
        u16("protocol_version", 0xFFA),
        u32("ghcb_usage", 0xFFC),
    ],
)

SAVE_AREA_REGISTERS = ("cpl", "xss", "dr7", "rax", "rcx", "rdx", "rbx",
                       "sw_exitcode", "sw_exitinfo1", "sw_exitinfo2", "sw_scratch", "xcr0")


@dataclass(frozen=True)
class Ghcb:
    """A GHCB: the registers the guest exposes (others absent), the exit code and shared buffer."""

    registers: tuple[tuple[str, int], ...] = ()
    shared_buffer: bytes = bytes(SHARED_BUFFER_SIZE)
    protocol_version: int = GHCB_PROTOCOL_VERSION
    ghcb_usage: int = 0
    x87_state_gpa: int = 0  # where the guest keeps x87 state the hypervisor may need (0: none)

    def __post_init__(self) -> None:
        for name, _ in self.registers:
            if name not in SAVE_AREA_REGISTERS:
                raise UsageError(f"GHCB has no save-area register {name!r}")
        if len(self.shared_buffer) != SHARED_BUFFER_SIZE:
            raise UsageError(f"GHCB shared buffer must be {SHARED_BUFFER_SIZE:#x} bytes")

    @classmethod
    def build(cls, shared_buffer: bytes = b"", **registers: int) -> Ghcb:
        padded = shared_buffer.ljust(SHARED_BUFFER_SIZE, b"\0")
        return cls(tuple(sorted(registers.items())), padded)

    def get(self, name: str) -> int | None:
        """The value of ``name`` if the guest marked it valid, else None."""
        return dict(self.registers).get(name)

    def valid_bitmap(self) -> bytes:
        bitmap = 0
        for name, _ in self.registers:
            bitmap |= 1 << (GHCB_LAYOUT.field(name).offset // 8)
        return bitmap.to_bytes(16, "little")

    def to_bytes(self) -> bytes:
        values: dict[str, int | bytes] = {name: 0 for name in SAVE_AREA_REGISTERS}
        values.update(self.registers)
        values["valid_bitmap"] = self.valid_bitmap()
        values["x87_state_gpa"] = self.x87_state_gpa
        values["shared_buffer"] = self.shared_buffer
        values["protocol_version"] = self.protocol_version
        values["ghcb_usage"] = self.ghcb_usage
        return GHCB_LAYOUT.pack(values)

    @classmethod
    def from_bytes(cls, data: bytes) -> Ghcb:
        values = GHCB_LAYOUT.unpack(data)
        raw_bitmap = values["valid_bitmap"]
        assert isinstance(raw_bitmap, bytes)
        bitmap = int.from_bytes(raw_bitmap, "little")
        registers = []
        for name in SAVE_AREA_REGISTERS:
            valid = bitmap >> (GHCB_LAYOUT.field(name).offset // 8) & 1
            if valid:
                value = values[name]
                assert isinstance(value, int)
                registers.append((name, value))
            elif values[name]:
                raise FormatError(f"GHCB: {name} is non-zero but not marked valid")
        known = sum(1 << (GHCB_LAYOUT.field(n).offset // 8) for n in SAVE_AREA_REGISTERS)
        if bitmap & ~known:
            raise FormatError(f"GHCB: valid bitmap {bitmap:#x} marks unknown quadwords")
        shared = values["shared_buffer"]
        version, usage = values["protocol_version"], values["ghcb_usage"]
        x87 = values["x87_state_gpa"]
        assert isinstance(shared, bytes) and isinstance(version, int) and isinstance(usage, int)
        assert isinstance(x87, int)
        return cls(tuple(sorted(registers)), shared, version, usage, x87)
