"""The initial VMSA a VMM builds (QEMU, EC2, GCE) against sev-snp-measure's dumped page."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.formats.snp.vmsa import BSP_RESET_EIP, VmmType, Vmsa, initial_vmsa


def test_qemu_bsp_matches_the_dumped_vmsa(vectors: Path) -> None:
    dumped = vectors / "snp" / "sev-snp-measure" / "vmsa0_qemu_bsp_epycv4_features0x1.bin"
    page = initial_vmsa(BSP_RESET_EIP, sev_features=0x1, vcpu_signature=0x800F12).to_bytes()
    assert page == dumped.read_bytes()


def test_ap_state_splits_the_reset_eip() -> None:
    vmsa = initial_vmsa(0x0080B004, sev_features=0x21, vcpu_signature=0xA00F11)
    assert vmsa.segment("cs").base == 0x00800000
    assert vmsa.registers["rip"] == 0xB004
    assert vmsa.registers["rdx"] == 0xA00F11
    assert vmsa.registers["sev_features"] == 0x21
    assert Vmsa.from_bytes(vmsa.to_bytes()) == vmsa


@pytest.mark.parametrize(
    ("vmm", "eip", "cs", "ss", "tr", "rdx", "mxcsr", "g_pat"),
    [
        (VmmType.EC2, BSP_RESET_EIP, 0x9A, 0x92, 0x83, 0x600, 0, 0x0007040600070406),
        (VmmType.EC2, 0x80B004, 0x9B, 0x92, 0x83, 0x600, 0, 0x0007040600070406),
        (VmmType.GCE, BSP_RESET_EIP, 0x9B, 0x93, 0x8B, 0x600, 0, 0x00070106),
        (VmmType.QEMU, BSP_RESET_EIP, 0x9B, 0x93, 0x8B, 0x800F12, 0x1F80, 0x0007040600070406),
    ],
)
def test_vmm_differences(
    vmm: VmmType, eip: int, cs: int, ss: int, tr: int, rdx: int, mxcsr: int, g_pat: int
) -> None:
    vmsa = initial_vmsa(eip, sev_features=1, vcpu_signature=0x800F12, vmm=vmm)
    assert vmsa.segment("cs").attrib == cs
    assert vmsa.segment("ss").attrib == ss
    assert vmsa.segment("tr").attrib == tr
    assert vmsa.registers["rdx"] == rdx
    assert vmsa.registers["mxcsr"] == mxcsr
    assert vmsa.registers["x87_fcw"] == (0x37F if mxcsr else 0)
    assert vmsa.registers["g_pat"] == g_pat
