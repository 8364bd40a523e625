"""The CPUID values of the emulated silicon and how the firmware corrects each register of a
page: exact, subset (with the hypervisor bit allowed in CPUID 1 ECX) or free."""

from __future__ import annotations

from cvm.formats.snp.cpuid_page import CpuidFunction, CpuidPage
from cvm.hardware.psp.cpuid_policy import HYPERVISOR_PRESENT, check_cpuid_page, platform_cpuid

SIGNATURE = 0x00A00F10


def test_the_silicon_reports_a_zen_3_epyc() -> None:
    """Fn0000_0001, Fn0000_0007/0, Fn8000_0001 and Fn8000_001F of the emulated EPYC: its
    feature words, C-bit 51 with one bit of physical address reduction, four VMPLs, 509 ASIDs
    and 1 as the lowest ASID of a SEV guest without ES."""
    assert platform_cpuid(SIGNATURE) == {
        (0x0000_0001, 0): (SIGNATURE, 0x0000_0800, 0x7EF8_320B, 0x178B_FBFF),
        (0x0000_0007, 0): (0, 0x219C_97A9, 0x0040_069C, 0x0000_0010),
        (0x8000_0001, 0): (SIGNATURE, 0, 0x75C2_37FF, 0x2FD3_FBFF),
        (0x8000_001F, 0): (0x0001_01FF, 0x4000 | 0x40 | 51, 509, 1),
    }


PLATFORM = platform_cpuid(SIGNATURE)


def test_every_subset_register_is_cut_to_the_silicons_bits() -> None:
    """Each SUBSET register keeps only the hardware's bits: CPUID 1 EDX, 7 EBX/ECX/EDX,
    8000_0001 ECX/EDX, 8000_001F EAX; the rest of the function is kept as proposed."""
    everything = 0xFFFF_FFFF
    page = CpuidPage(
        (
            CpuidFunction(1, 0, eax=0x1234, ebx=everything, ecx=0, edx=everything),
            CpuidFunction(7, 0, eax=everything, ebx=everything, ecx=everything, edx=everything),
            CpuidFunction(0x8000_0001, 0, eax=1, ebx=2, ecx=everything, edx=everything),
            CpuidFunction(0x8000_001F, 0, eax=everything, ebx=PLATFORM[(0x8000_001F, 0)][1],
                          ecx=7, edx=everything),
        )
    )
    corrected, problems = check_cpuid_page(page, PLATFORM)
    assert [f.registers for f in corrected.functions] == [
        (0x1234, everything, 0, PLATFORM[(1, 0)][3]),
        (everything, *PLATFORM[(7, 0)][1:]),
        (1, 2, *PLATFORM[(0x8000_0001, 0)][2:]),
        (PLATFORM[(0x8000_001F, 0)][0], PLATFORM[(0x8000_001F, 0)][1], 7, everything),
    ]
    assert len(problems) == 7


def test_the_hypervisor_bit_is_the_only_extra_bit_of_cpuid_1_ecx() -> None:
    ecx = PLATFORM[(1, 0)][2]
    allowed = CpuidPage((CpuidFunction(1, 0, ecx=ecx | HYPERVISOR_PRESENT),))
    assert check_cpuid_page(allowed, PLATFORM) == (allowed, ())
    vmx = CpuidPage((CpuidFunction(1, 0, ecx=ecx | 1 << 5),))
    corrected, problems = check_cpuid_page(vmx, PLATFORM)
    assert corrected.functions[0].ecx == ecx
    assert problems == (
        f"CPUID 0x00000001/0 ECX {ecx | 1 << 5:#010x} is not allowed (subset of {ecx:#010x}); "
        f"corrected to {ecx:#010x}",
    )


def test_a_function_the_silicon_does_not_report_is_not_checked() -> None:
    """A platform table without a function the policy covers lets that function through."""
    platform = {key: value for key, value in PLATFORM.items() if key != (7, 0)}
    page = CpuidPage((CpuidFunction(7, 0, ebx=0xFFFF_FFFF), CpuidFunction(7, 1, ebx=1)))
    assert check_cpuid_page(page, platform) == (page, ())
    assert check_cpuid_page(CpuidPage((page.functions[1],)), PLATFORM)[1] == ()
