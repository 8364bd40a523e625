"""TPM_RC numbering and names (Part 2 Table 16/17) against codes seen on real TPMs."""

from __future__ import annotations

from cvm.formats.tpm2.response_code import (
    TpmRc,
    base_code,
    describe,
    for_handle,
    for_parameter,
    for_session,
)


def test_codes_seen_on_swtpm() -> None:
    assert for_session(TpmRc.POLICY_FAIL, 1) == 0x99D
    assert for_parameter(TpmRc.VALUE, 1) == 0x1C4
    assert for_session(TpmRc.AUTH_FAIL, 1) == 0x98E
    assert TpmRc.AUTH_UNAVAILABLE == 0x12F
    assert TpmRc.OBJECT_MEMORY == 0x902
    assert TpmRc.INITIALIZE == 0x100
    assert for_parameter(TpmRc.INTEGRITY, 1) == 0x1DF


def test_describe_names_the_place() -> None:
    assert describe(0x99D) == "TPM_RC_POLICY_FAIL (session 1)"
    assert describe(0x1C4) == "TPM_RC_VALUE (parameter 1)"
    assert describe(for_handle(TpmRc.HANDLE, 2)) == "TPM_RC_HANDLE (handle 2)"
    assert describe(0x921) == "TPM_RC_LOCKOUT"
    assert describe(0) == "TPM_RC_SUCCESS"


def test_format_zero_codes_take_no_number() -> None:
    assert for_parameter(TpmRc.NV_RANGE, 3) == TpmRc.NV_RANGE
    assert base_code(0x99D) == TpmRc.POLICY_FAIL
