"""The firmware's CPUID page policy (56860 §8.17.2.6): exact, subset and free registers."""

from __future__ import annotations

from cvm.formats.snp.cpuid_page import CpuidFunction, CpuidPage
from cvm.hardware.psp.cpuid_policy import HYPERVISOR_PRESENT, check_cpuid_page, platform_cpuid

PLATFORM = platform_cpuid(0x00A00F10)


def test_the_hardware_values_pass_unchanged() -> None:
    page = CpuidPage(
        tuple(CpuidFunction(leaf, sub, 0, 0, *values) for (leaf, sub), values in PLATFORM.items())
    )
    corrected, problems = check_cpuid_page(page, PLATFORM)
    assert problems == () and corrected == page


def test_subset_exact_and_unchecked_registers() -> None:
    _, _, ecx, edx = PLATFORM[(1, 0)]
    sev = PLATFORM[(0x8000_001F, 0)]
    page = CpuidPage(
        (
            CpuidFunction(1, 0, eax=0x00A00F11, ecx=(ecx | HYPERVISOR_PRESENT), edx=edx),
            CpuidFunction(7, 0, ebx=0xFFFF_FFFF),
            CpuidFunction(0x8000_001F, 0, eax=sev[0], ebx=(sev[1] & ~0x3F) | 47),
            CpuidFunction(0x4000_0000, 0, eax=0x4000_0001, ebx=0x1234),
        )
    )
    corrected, problems = check_cpuid_page(page, PLATFORM)
    assert len(problems) == 2
    assert corrected.functions[0] == page.functions[0]  # FMS is the VMM's; HV bit allowed
    assert corrected.functions[1].ebx == PLATFORM[(7, 0)][1]  # features cut to the silicon's
    assert corrected.functions[2].ebx == sev[1]  # the C-bit position must be exact
    assert corrected.functions[3] == page.functions[3]  # hypervisor leaves pass
    _, again = check_cpuid_page(corrected, PLATFORM)
    assert again == ()
