"""A firmware refusal's message and code (SNP ABI Table 28 values)."""

from __future__ import annotations

from cvm.errors import StatusError
from cvm.hardware.psp.status import SevStatus, refuse


def test_a_refusal_names_the_command_the_status_and_why() -> None:
    error = refuse(SevStatus.ASID_OWNED, "SNP_LAUNCH_START", "ASID 3 is in use")
    assert isinstance(error, StatusError)
    assert str(error) == "SNP_LAUNCH_START failed with ASID_OWNED (0xc): ASID 3 is in use"
    assert error.code == 0x0C and type(error.code) is int


def test_the_status_values_are_the_abi_table() -> None:
    assert (SevStatus.SUCCESS, SevStatus.AEAD_OFLOW, SevStatus.RMP_INIT_REQUIRED,
            SevStatus.INVALID_KEY) == (0x00, 0x1D, 0x20, 0x27)
