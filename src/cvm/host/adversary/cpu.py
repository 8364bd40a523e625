"""Attacks through the CPU interface the host emulates: CPUID answers and injected interrupts.

CPUID is intercepted in every mode. Without SNP the guest takes whatever the host answers (in
``sev-es`` through the GHCB, which the host fills). An SNP guest trusts only the CPUID page the
PSP checked at launch (SEV-SNP ABI 56860 §8.17.2.6): an out-of-policy value there is refused
and corrected, so the host's lie never reaches the guest.

The host injects events through the VMCB's EVENTINJ field, which VMRUN delivers whatever the
guest's RFLAGS.IF says (APM vol. 2 §15.20); an SNP guest that enables Restricted Injection
(SEV_FEATURES bit 3) has VMRUN refuse every host-injected event.
"""

from __future__ import annotations

from cvm.hardware.fault import FaultKind
from cvm.hardware.vcpu import Vcpu, VmExit
from cvm.host.adversary.lab import Lab
from cvm.host.adversary.threat import (
    Family,
    Mechanism,
    Observed,
    Verdict,
    blocked,
    by,
    declare,
    ok,
    succeeded,
)
from cvm.host.vmm import Guest

SEV_LEAF = 0x8000_001F
C_BIT_MASK = 0x3F
LYING_C_BIT = 47  # the host claims the encryption bit is bit 47, not 51
TIMER_VECTOR = 0x20
UNCHECKED_CPUID = ok("the guest takes the host's CPUID answer")
INJECTABLE = ok("VMRUN delivers whatever the host puts in EVENTINJ")


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


def inject_masked_interrupt(lab: Lab) -> Observed:
    lab.guest_interrupt_masked()
    faults_before = len(lab.host.machine.faults)

    def inject(guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        vcpu.inject_event(TIMER_VECTOR)

    lab.host.exit_hooks.append(inject)
    try:
        lab.guest_exit()
    finally:
        lab.host.exit_hooks.remove(inject)
    if TIMER_VECTOR in lab.guest_events():
        return succeeded(f"vector {TIMER_VECTOR:#x} was delivered with interrupts masked")
    refusals = [f for f in lab.host.machine.faults[faults_before:]
                if f.kind is FaultKind.VMEXIT_INVALID]
    if refusals:
        return blocked(Mechanism.RESTRICTED_INJECTION, str(refusals[0]))
    # Nothing refused the event: it was lost (matches no expectation).
    return Observed(Verdict.BLOCKED, "the event was not delivered")


# -- the declarations: the expected outcome in plain, sev, sev-es and sev-snp -------------------
ATTACKS = (
    declare(
        "lie-cpuid", Family.CPU,
        "answer CPUID 0x8000001F with a false C-bit position (the guest would leak on writes)",
        (UNCHECKED_CPUID,) * 3 + (by(Mechanism.CPUID_PAGE),),
        lie_cpuid,
    ),
    declare(
        "inject-masked-interrupt", Family.CPU,
        "inject an interrupt while the guest has interrupts masked (RFLAGS.IF = 0)",
        (INJECTABLE,) * 3 + (by(Mechanism.RESTRICTED_INJECTION),),
        inject_masked_interrupt,
    ),
)
