"""vCPU models and the CPUID(1).EAX signature QEMU puts in RDX of every initial VMSA.

The signature encoding is AMD's "CPUID Specification" (25481), CPUID Fn0000_0001_EAX
"Family, Model, Stepping Identifiers": base family 3:0 (at most 0xF) in bits 11:8, extended
family (family - 0xF) in 27:20, model 3:0 in 7:4, extended model in 19:16, stepping in 3:0.
The family/model/stepping of each named model are those of QEMU's ``target/i386/cpu.c``
``builtin_x86_defs``.
"""

from __future__ import annotations

from types import MappingProxyType

from cvm.errors import UsageError


def cpu_signature(family: int, model: int, stepping: int) -> int:
    """The CPUID(1).EAX value of a family/model/stepping (25481, Fn0000_0001_EAX)."""
    if not (0 <= family <= 0xFF + 0xF and 0 <= model <= 0xFF and 0 <= stepping <= 0xF):
        raise UsageError(f"family {family}, model {model}, stepping {stepping} out of range")
    base_family = min(family, 0xF)
    extended_family = family - 0xF if family > 0xF else 0
    return (
        (extended_family << 20)
        | ((model >> 4) << 16)
        | (base_family << 8)
        | ((model & 0xF) << 4)
        | stepping
    )


_FAMILY_MODEL_STEPPING = {
    "EPYC": (23, 1, 2),
    "EPYC-v1": (23, 1, 2),
    "EPYC-v2": (23, 1, 2),
    "EPYC-IBPB": (23, 1, 2),
    "EPYC-v3": (23, 1, 2),
    "EPYC-v4": (23, 1, 2),
    "EPYC-Rome": (23, 49, 0),
    "EPYC-Rome-v1": (23, 49, 0),
    "EPYC-Rome-v2": (23, 49, 0),
    "EPYC-Rome-v3": (23, 49, 0),
    "EPYC-Milan": (25, 1, 1),
    "EPYC-Milan-v1": (25, 1, 1),
    "EPYC-Milan-v2": (25, 1, 1),
    "EPYC-Genoa": (25, 17, 0),
    "EPYC-Genoa-v1": (25, 17, 0),
    "EPYC-Turin": (26, 0, 0),
}

VCPU_SIGNATURES = MappingProxyType(
    {name: cpu_signature(*fms) for name, fms in _FAMILY_MODEL_STEPPING.items()}
)


def vcpu_signature(name: str) -> int:
    """The signature of a named QEMU vCPU model (case-insensitive)."""
    for known, signature in VCPU_SIGNATURES.items():
        if known.lower() == name.lower():
            return signature
    raise UsageError(f"unknown vCPU type {name!r}; known: {', '.join(VCPU_SIGNATURES)}")
