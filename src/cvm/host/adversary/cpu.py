"""Attacks through the CPU interface the host emulates: CPUID answers and injected interrupts.

CPUID is intercepted in every mode. Without SNP the guest takes whatever the host answers (in
``sev-es`` through the GHCB, which the host fills). An SNP guest trusts only the CPUID page the
PSP checked at launch (SEV-SNP ABI 56860 §8.17.2.6): an out-of-policy value there is refused
and corrected, so the host's lie never reaches the guest.
"""

from __future__ import annotations

from cvm.host.adversary.lab import Lab
from cvm.host.adversary.threat import (
    OK,
    Family,
    Mechanism,
    Observed,
    attack,
    blocked,
    by,
    succeeded,
)

SEV_LEAF = 0x8000_001F
C_BIT_MASK = 0x3F
LYING_C_BIT = 47  # the host claims the encryption bit is bit 47, not 51


@attack("lie-cpuid", Family.CPU,
        "answer CPUID 0x8000001F with a false C-bit position (the guest would leak on writes)",
        (OK, OK, OK, by(Mechanism.CPUID_PAGE)))
def lie_cpuid(lab: Lab) -> Observed:
    eax, ebx, ecx, edx = lab.host.cpuid[SEV_LEAF]
    truth = ebx & C_BIT_MASK
    lab.host.cpuid[SEV_LEAF] = (eax, (ebx & ~C_BIT_MASK) | LYING_C_BIT, ecx, edx)
    _, seen, _, _ = lab.guest_cpuid(SEV_LEAF)
    if seen & C_BIT_MASK == LYING_C_BIT:
        return succeeded(f"the guest believes the C-bit is bit {LYING_C_BIT}")
    return blocked(
        Mechanism.CPUID_PAGE,
        f"the guest's CPUID page says bit {seen & C_BIT_MASK} (the silicon's {truth}): "
        "the PSP corrected the host's table",
    )


ATTACKS = (lie_cpuid,)
