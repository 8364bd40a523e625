"""A fault's one-line description (what the fault log and the host's view hold) and the
exception that carries it."""

from __future__ import annotations

import pytest

from cvm.hardware.fault import PFERR_RMP, PFERR_WRITE, Fault, FaultKind, FaultRaised, Who


def test_a_guest_fault_names_its_vmpl() -> None:
    fault = Fault(FaultKind.NPF, 0x12345000, Who.GUEST, PFERR_RMP | PFERR_WRITE, "page not "
                  "assigned", vmpl=2, asid=7)
    assert str(fault) == "#NPF guest VMPL2 at 0x12345000 (error 0x80000002): page not assigned"


def test_vmpl_0_is_named_and_no_vmpl_is_left_out() -> None:
    assert str(Fault(FaultKind.VC, 0x0, Who.GUEST, 0x72, "cpuid", vmpl=0)) == (
        "#VC guest VMPL0 at 0x0 (error 0x72): cpuid")
    assert str(Fault(FaultKind.HOST_PF, 0x1000, Who.HOST, 0, "guest-owned")) == (
        "#PF(RMP) host at 0x1000 (error 0x0): guest-owned")


def test_the_raised_fault_carries_the_record_and_its_text() -> None:
    fault = Fault(FaultKind.VMEXIT_INVALID, 0x2000, Who.HOST, 1, "bad VMSA")
    with pytest.raises(FaultRaised) as raised:
        raise FaultRaised(fault)
    assert raised.value.fault is fault
    assert str(raised.value) == str(fault) == "VMEXIT_INVALID host at 0x2000 (error 0x1): bad VMSA"
