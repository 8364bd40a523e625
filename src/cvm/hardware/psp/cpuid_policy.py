"""How the firmware checks the CPUID page a hypervisor supplies (PAGE_TYPE_CPUID).

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), §8.17.2.6 "CPUID Reporting"
and the CPUID policy table of its appendix: the hypervisor proposes the values the guest will
trust; for the security-relevant functions the firmware requires each register to be either
exactly the hardware's value (the C-bit position and VMPL count) or a subset of what
the hardware supports (feature bits); the family/model/stepping a VMM advertises for its vCPU
model is its own choice. When a value breaks the policy the command fails with
INVALID_PARAM and the firmware writes the corrected table back so the hypervisor can retry —
QEMU then reports which entries changed.

The hardware values are the platform's (:func:`platform_cpuid`); functions the policy does not
cover (the hypervisor range 0x4000_0000, cache topology, ...) pass unchecked, as on real parts.
"""

from __future__ import annotations

from dataclasses import replace
from enum import Enum
from types import MappingProxyType

from cvm.formats.snp.cpuid_page import CpuidFunction, CpuidPage

Registers = tuple[int, int, int, int]
REGISTER_NAMES = ("eax", "ebx", "ecx", "edx")
HYPERVISOR_PRESENT = 1 << 31  # CPUID 1 ECX[31], set by the hypervisor, not the silicon


class Rule(Enum):
    """What the firmware requires of one output register."""

    ANY = "any"
    EXACT = "exact"
    SUBSET = "subset"


# (leaf, subleaf) -> per-register (rule, bits allowed beyond the hardware's for SUBSET).
POLICY: MappingProxyType[tuple[int, int], tuple[tuple[Rule, int], ...]] = MappingProxyType(
    {
        (0x0000_0001, 0): (
            (Rule.ANY, 0),
            (Rule.ANY, 0),
            (Rule.SUBSET, HYPERVISOR_PRESENT),
            (Rule.SUBSET, 0),
        ),
        (0x0000_0007, 0): ((Rule.ANY, 0), (Rule.SUBSET, 0), (Rule.SUBSET, 0), (Rule.SUBSET, 0)),
        (0x8000_0001, 0): ((Rule.ANY, 0), (Rule.ANY, 0), (Rule.SUBSET, 0), (Rule.SUBSET, 0)),
        (0x8000_001F, 0): ((Rule.SUBSET, 0), (Rule.EXACT, 0), (Rule.ANY, 0), (Rule.ANY, 0)),
    }
)


def platform_cpuid(signature: int) -> dict[tuple[int, int], Registers]:
    """The silicon's own CPUID values for the checked functions of an EPYC with ``signature``.

    Feature words are those of a Zen 3/Zen 4 EPYC (AMD 25481 bit assignments); 0x8000_001F
    advertises SME, SEV, SEV-ES, SEV-SNP and VMPLs, C-bit 51, one bit of address reduction,
    four VMPLs and 509 ASIDs.
    """
    return {
        (0x0000_0001, 0): (signature, 0x0000_0800, 0x7EF8_320B, 0x178B_FBFF),
        (0x0000_0007, 0): (0, 0x219C_97A9, 0x0040_069C, 0x0000_0010),
        (0x8000_0001, 0): (signature, 0, 0x75C2_37FF, 0x2FD3_FBFF),
        (0x8000_001F, 0): (0x0001_01FF, (4 << 12) | (1 << 6) | 51, 509, 1),
    }


def _correct(rule: Rule, extra: int, proposed: int, hardware: int) -> int:
    if rule is Rule.EXACT:
        return hardware
    if rule is Rule.SUBSET:
        return proposed & (hardware | extra)
    return proposed


def check_cpuid_page(
    page: CpuidPage, platform: dict[tuple[int, int], Registers]
) -> tuple[CpuidPage, tuple[str, ...]]:
    """The page with every out-of-policy register corrected, and what was wrong."""
    problems: list[str] = []
    corrected: list[CpuidFunction] = []
    for function in page.functions:
        rules = POLICY.get(function.key)
        hardware = platform.get(function.key)
        if rules is None or hardware is None:
            corrected.append(function)
            continue
        values = list(function.registers)
        for index, ((rule, extra), proposed, real) in enumerate(
            zip(rules, function.registers, hardware, strict=True)
        ):
            fixed = _correct(rule, extra, proposed, real)
            if fixed != proposed:
                problems.append(
                    f"CPUID {function.eax_in:#010x}/{function.ecx_in} "
                    f"{REGISTER_NAMES[index].upper()} {proposed:#010x} is not allowed "
                    f"({rule.value} of {real:#010x}); corrected to {fixed:#010x}"
                )
                values[index] = fixed
        corrected.append(
            replace(function, eax=values[0], ebx=values[1], ecx=values[2], edx=values[3])
        )
    return CpuidPage(tuple(corrected)), tuple(problems)
