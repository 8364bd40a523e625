"""The VM save area (VMSA) of an SEV-ES/SEV-SNP guest: 4096 bytes, little-endian.

Layout from the AMD64 Architecture Programmer's Manual vol. 2 (24593), Appendix B, Table B-4
"VMSA Layout, State Save Area for SEV-ES". Only the fields cvm reads or writes are named; the
ranges between them are kept verbatim (``area_0x...``) because real save areas use them for
state cvm does not model. Segment registers are 16 bytes each: u16 selector, u16 attrib,
u32 limit, u64 base.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, IntFlag
from operator import itemgetter
from types import MappingProxyType
from typing import cast

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, u8, u16, u32, u64

VMSA_SIZE = 0x1000
SEGMENT_SIZE = 0x10

SEGMENT_NAMES = ("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr")
GPR_NAMES = (
    "rax", "rbx", "rcx", "rdx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)

VMSA_LAYOUT = Layout(
    "VMSA",
    VMSA_SIZE,
    [
        *(raw(name, 0x10 * i, SEGMENT_SIZE) for i, name in enumerate(SEGMENT_NAMES)),
        raw("area_0x0a0", 0x0A0, 0x2A),
        u8("vmpl", 0x0CA),
        u8("cpl", 0x0CB),
        raw("area_0x0cc", 0x0CC, 0x4),
        u64("efer", 0x0D0),
        raw("area_0x0d8", 0x0D8, 0x68),
        u64("xss", 0x140),
        u64("cr4", 0x148),
        u64("cr3", 0x150),
        u64("cr0", 0x158),
        u64("dr7", 0x160),
        u64("dr6", 0x168),
        u64("rflags", 0x170),
        u64("rip", 0x178),
        raw("area_0x180", 0x180, 0x58),
        u64("rsp", 0x1D8),
        raw("area_0x1e0", 0x1E0, 0x18),
        u64("rax", 0x1F8),
        raw("area_0x200", 0x200, 0x68),
        u64("g_pat", 0x268),
        raw("area_0x270", 0x270, 0x78),
        u32("pkru", 0x2E8),
        u32("tsc_aux", 0x2EC),
        raw("area_0x2f0", 0x2F0, 0x18),
        u64("rcx", 0x308),
        u64("rdx", 0x310),
        u64("rbx", 0x318),
        raw("area_0x320", 0x320, 0x8),
        u64("rbp", 0x328),
        u64("rsi", 0x330),
        u64("rdi", 0x338),
        u64("r8", 0x340),
        u64("r9", 0x348),
        u64("r10", 0x350),
        u64("r11", 0x358),
        u64("r12", 0x360),
        u64("r13", 0x368),
        u64("r14", 0x370),
        u64("r15", 0x378),
        raw("area_0x380", 0x380, 0x30),
        u64("sev_features", 0x3B0),
        raw("area_0x3b8", 0x3B8, 0x10),
        u64("virtual_tom", 0x3C8),
        raw("area_0x3d0", 0x3D0, 0x18),
        u64("xcr0", 0x3E8),
        raw("area_0x3f0", 0x3F0, 0x10),
        u64("x87_dp", 0x400),
        u32("mxcsr", 0x408),
        u16("x87_ftw", 0x40C),
        u16("x87_fsw", 0x40E),
        u16("x87_fcw", 0x410),
        raw("area_0x412", 0x412, 0xE),
        raw("fpreg_x87", 0x420, 0x50),
        raw("fpreg_xmm", 0x470, 0x100),
        raw("fpreg_ymm", 0x570, 0x100),
        raw("area_0x670", 0x670, VMSA_SIZE - 0x670),
    ],
)

REGISTER_NAMES = tuple(f.name for f in VMSA_LAYOUT.fields if f.kind == "uint")
BLOB_NAMES = tuple(f.name for f in VMSA_LAYOUT.fields if f.kind == "bytes")
_registers_of, _blobs_of = itemgetter(*REGISTER_NAMES), itemgetter(*BLOB_NAMES)
_REGISTER_DEFAULTS: dict[str, int] = dict.fromkeys(REGISTER_NAMES, 0)
_BLOB_DEFAULTS = {f.name: bytes(f.size) for f in VMSA_LAYOUT.fields if f.kind == "bytes"}
# The integer registers at their offsets, every byte area as padding: what a vCPU's world
# switch reads and writes (its register file holds the integer registers only).
_REGISTERS_STRUCT = struct.Struct("<" + "".join(
    {1: "B", 2: "H", 4: "I", 8: "Q"}[f.size] if f.kind == "uint" else f"{f.size}x"
    for f in VMSA_LAYOUT.fields))


@dataclass(frozen=True)
class Segment:
    """A segment register as the save area stores it."""

    selector: int
    attrib: int
    limit: int
    base: int

    @classmethod
    def from_bytes(cls, data: bytes) -> Segment:
        return cls(
            int.from_bytes(data[0:2], "little"),
            int.from_bytes(data[2:4], "little"),
            int.from_bytes(data[4:8], "little"),
            int.from_bytes(data[8:16], "little"),
        )

    def to_bytes(self) -> bytes:
        return (
            self.selector.to_bytes(2, "little")
            + self.attrib.to_bytes(2, "little")
            + self.limit.to_bytes(4, "little")
            + self.base.to_bytes(8, "little")
        )


@dataclass(frozen=True)
class Vmsa:
    """A parsed save area: integer registers by name and the byte-valued areas by name."""

    registers: Mapping[str, int] = field(default_factory=dict)
    blobs: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = (self.registers.keys() - _REGISTER_DEFAULTS.keys()) | (
            self.blobs.keys() - _BLOB_DEFAULTS.keys())
        if unknown:
            raise UsageError(f"VMSA has no field(s) {sorted(unknown)}")
        # every field in layout order: the defaults, overridden by the values given
        registers = {**_REGISTER_DEFAULTS, **self.registers}
        blobs = {**_BLOB_DEFAULTS, **self.blobs}
        object.__setattr__(self, "registers", MappingProxyType(registers))
        object.__setattr__(self, "blobs", MappingProxyType(blobs))

    @classmethod
    def from_bytes(cls, data: bytes) -> Vmsa:
        values = VMSA_LAYOUT.unpack(data)  # the layout's own fields: integers, then areas
        registers = cast("dict[str, int]", dict(zip(REGISTER_NAMES, _registers_of(values),
                                                    strict=True)))
        blobs = cast("dict[str, bytes]", dict(zip(BLOB_NAMES, _blobs_of(values), strict=True)))
        return cls(registers, blobs)

    def to_bytes(self) -> bytes:
        return VMSA_LAYOUT.pack({**self.registers, **self.blobs})

    def segment(self, name: str) -> Segment:
        return Segment.from_bytes(self.blobs[name])

    def replace(
        self,
        registers: Mapping[str, int] | None = None,
        segments: Mapping[str, Segment] | None = None,
    ) -> Vmsa:
        new_blobs = dict(self.blobs)
        for name, segment in (segments or {}).items():
            if name not in SEGMENT_NAMES:
                raise UsageError(f"VMSA has no segment {name!r}")
            new_blobs[name] = segment.to_bytes()
        return Vmsa({**self.registers, **(registers or {})}, new_blobs)


_INT_ONLY = {int}


def pack_registers(registers: Mapping[str, int]) -> bytes:
    """The save area holding ``registers`` with every byte area zero: the bytes of
    ``Vmsa(registers).to_bytes()``, in one struct call when every register is named with an
    ``int`` in range (anything else takes that path and its errors)."""
    page = pack_registers_exact(registers)
    return Vmsa(registers).to_bytes() if page is None else page


def pack_registers_exact(registers: Mapping[str, int]) -> bytes | None:
    """:func:`pack_registers` when ``registers`` names every register exactly once, each an
    ``int`` in range — the page then unpacks to ``registers`` again — else None."""
    if len(registers) != len(REGISTER_NAMES):
        return None
    try:
        values = _registers_of(registers)
    except KeyError:
        return None
    if set(map(type, values)) != _INT_ONLY:  # each exactly int
        return None
    try:
        return _REGISTERS_STRUCT.pack(*values)
    except struct.error:
        return None


def unpack_registers(page: bytes) -> dict[str, int]:
    """The integer registers of a save area: ``dict(Vmsa.from_bytes(page).registers)``."""
    if len(page) != VMSA_SIZE:
        raise FormatError(f"VMSA: expected {VMSA_SIZE:#x} bytes, got {len(page):#x}")
    return dict(zip(REGISTER_NAMES, _REGISTERS_STRUCT.unpack(page), strict=True))


# --- Initial state as the VMM builds it ---------------------------------------------------------

BSP_RESET_EIP = 0xFFFFFFF0
DEFAULT_G_PAT = 0x0007040600070406  # APM vol. 2 §A.3, the PAT reset value
EC2_GCE_RDX = 0x600


class VmmType(Enum):
    """The VMM whose initial register state a launch reproduces (each differs slightly)."""

    QEMU = "qemu"
    EC2 = "ec2"
    GCE = "gce"


def initial_vmsa(
    eip: int, *, sev_features: int, vcpu_signature: int, vmm: VmmType = VmmType.QEMU
) -> Vmsa:
    """The save area a VMM gives a vCPU before launch, starting at ``eip``.

    QEMU/KVM (``target/i386/sev.c``, ``arch/x86/kvm/svm/sev.c``): real-mode reset state with
    CS base ``eip & 0xffff0000`` and RIP ``eip & 0xffff``, EFER.SVME, CR4.MCE, RDX = the
    vCPU's CPUID(1).EAX signature, SEV_FEATURES = the guest features, the FPU control words
    at their FINIT values. EC2 and GCE leave MXCSR/FCW zero and put 0x600 in RDX; EC2 uses
    other CS (BSP), SS and TR attributes, GCE another PAT.
    """
    cs_attrib, ss_attrib, tr_attrib = 0x9B, 0x93, 0x8B
    g_pat, rdx, mxcsr, fcw = DEFAULT_G_PAT, vcpu_signature, 0x1F80, 0x37F
    if vmm is VmmType.EC2:
        cs_attrib = 0x9A if eip == BSP_RESET_EIP else 0x9B
        ss_attrib, tr_attrib = 0x92, 0x83
        rdx, mxcsr, fcw = EC2_GCE_RDX, 0, 0
    elif vmm is VmmType.GCE:
        g_pat, rdx, mxcsr, fcw = 0x00070106, EC2_GCE_RDX, 0, 0
    data = Segment(0, 0x93, 0xFFFF, 0)
    segments = {
        "es": data,
        "cs": Segment(0xF000, cs_attrib, 0xFFFF, eip & 0xFFFF0000),
        "ss": Segment(0, ss_attrib, 0xFFFF, 0),
        "ds": data,
        "fs": data,
        "gs": data,
        "gdtr": Segment(0, 0, 0xFFFF, 0),
        "ldtr": Segment(0, 0x82, 0xFFFF, 0),
        "idtr": Segment(0, 0, 0xFFFF, 0),
        "tr": Segment(0, tr_attrib, 0xFFFF, 0),
    }
    registers = {
        "efer": 0x1000,
        "cr4": 0x40,
        "cr0": 0x10,
        "dr7": 0x400,
        "dr6": 0xFFFF0FF0,
        "rflags": 0x2,
        "rip": eip & 0xFFFF,
        "g_pat": g_pat,
        "rdx": rdx,
        "sev_features": sev_features,
        "xcr0": 0x1,
        "mxcsr": mxcsr,
        "x87_fcw": fcw,
    }
    return Vmsa().replace(registers, segments)


class SevFeatures(IntFlag):
    """SEV_FEATURES (VMSA 0x3B0) bits, APM vol. 2 §15.35.x "SEV_FEATURES" (guest features)."""

    SNP_ACTIVE = 1 << 0
    VTOM = 1 << 1
    REFLECT_VC = 1 << 2
    RESTRICTED_INJECTION = 1 << 3
    ALTERNATE_INJECTION = 1 << 4
    DEBUG_SWAP = 1 << 5
    PREVENT_HOST_IBS = 1 << 6
    BTB_ISOLATION = 1 << 7
    VMPL_SSS = 1 << 8
    SECURE_TSC = 1 << 9
    VMSA_REG_PROT = 1 << 14
    SMT_PROTECTION = 1 << 15
