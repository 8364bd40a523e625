"""TPM_RC numbering and names (Part 2 Table 16/17) against codes seen on real TPMs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.formats.tpm2.response_code import (
    TpmRc,
    base_code,
    describe,
    for_handle,
    for_parameter,
    for_session,
    is_format_one,
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


# ---- against tpm2-tss's decoder (tpm2_rc_decode, recorded in tests/vectors/tpm/swtpm) ---------
DECODED = dict(
    line.split(" ", 1)
    for line in (Path(__file__).parents[2] / "vectors" / "tpm" / "swtpm" / "rc-decode.txt")
    .read_text().splitlines()
)


def _decoded(code: int) -> tuple[str, str]:
    """(where, text) of tpm2_rc_decode's line for ``code``: ("parameter(1)", "value is …")."""
    line = DECODED[f"{code:#05x}"].removeprefix("tpm:")
    where, _, text = line.partition(":")
    return where, text.strip()


# What each TPM_RC means, in the words of Part 2 Table 16 as the TSS prints them.
MEANING = {
    "SUCCESS": ("success", ""), "BAD_TAG": ("error(1.2)", ""),
    "INITIALIZE": ("error(2.0)", "not initialized"), "FAILURE": ("error(2.0)", "TPM failure"),
    "SEQUENCE": ("error(2.0)", "sequence handle"), "DISABLED": ("error(2.0)", "disabled"),
    "EXCLUSIVE": ("error(2.0)", "exclusivity"),
    "AUTH_TYPE": ("error(2.0)", "authorization handle is not correct"),
    "AUTH_MISSING": ("error(2.0)", "requires an authorization session"),
    "POLICY": ("error(2.0)", "invalid authPolicy"), "PCR": ("error(2.0)", "PCR check fail"),
    "PCR_CHANGED": ("error(2.0)", "PCR have changed"), "UPGRADE": ("error(2.0)", "field upgrade"),
    "TOO_MANY_CONTEXTS": ("error(2.0)", "context ID counter is at maximum"),
    "AUTH_UNAVAILABLE": ("error(2.0)", "not available for selected entity"),
    "REBOOT": ("error(2.0)", "StartupCLEAR is required"),
    "UNBALANCED": ("error(2.0)", "not reasonably balanced"),
    "COMMAND_SIZE": ("error(2.0)", "commandSize"),
    "COMMAND_CODE": ("error(2.0)", "command code not supported"),
    "AUTHSIZE": ("error(2.0)", "authorizationSize"),
    "AUTH_CONTEXT": ("error(2.0)", "with a context command"),
    "NV_RANGE": ("error(2.0)", "NV offset+size"),
    "NV_SIZE": ("error(2.0)", "allocation size is larger"),
    "NV_LOCKED": ("error(2.0)", "NV access locked"),
    "NV_AUTHORIZATION": ("error(2.0)", "NV access authorization fails"),
    "NV_UNINITIALIZED": ("error(2.0)", "before being initialized"),
    "NV_SPACE": ("error(2.0)", "insufficient space for NV"),
    "NV_DEFINED": ("error(2.0)", "already defined"),
    "BAD_CONTEXT": ("error(2.0)", "TPM2_ContextLoad is not valid"),
    "CPHASH": ("error(2.0)", "cpHash"), "PARENT": ("error(2.0)", "not a valid parent"),
    "NEEDS_TEST": ("error(2.0)", "needs testing"),
    "NO_RESULT": ("error(2.0)", "cannot process a request"),
    "SENSITIVE": ("error(2.0)", "sensitive area did not unmarshal"),
    "ASYMMETRIC": ("handle(unk)", "asymmetric algorithm"),
    "ATTRIBUTES": ("handle(unk)", "inconsistent attributes"),
    "HASH": ("handle(unk)", "hash algorithm not supported"),
    "VALUE": ("handle(unk)", "value is out of range"),
    "HIERARCHY": ("handle(unk)", "hierarchy is not enabled"),
    "KEY_SIZE": ("handle(unk)", "key size is not supported"),
    "MGF": ("handle(unk)", "mask generation"), "MODE": ("handle(unk)", "mode of operation"),
    "TYPE": ("handle(unk)", "type of the value"),
    "HANDLE": ("handle(unk)", "the handle is not correct"),
    "KDF": ("handle(unk)", "key derivation function"),
    "RANGE": ("handle(unk)", "value was out of allowed range"),
    "AUTH_FAIL": ("handle(unk)", "DA counter incremented"),
    "NONCE": ("handle(unk)", "nonce size"), "PP": ("handle(unk)", "assertion of PP"),
    "SCHEME": ("handle(unk)", "scheme"), "SIZE": ("handle(unk)", "wrong size"),
    "SYMMETRIC": ("handle(unk)", "symmetric algorithm"),
    "TAG": ("handle(unk)", "structure tag"), "SELECTOR": ("handle(unk)", "union selector"),
    "INSUFFICIENT": ("handle(unk)", "not enough octets"),
    "SIGNATURE": ("handle(unk)", "signature is not valid"),
    "KEY": ("handle(unk)", "key fields"), "POLICY_FAIL": ("handle(unk)", "a policy check failed"),
    "INTEGRITY": ("handle(unk)", "integrity check failed"),
    "TICKET": ("handle(unk)", "invalid ticket"), "RESERVED_BITS": ("handle(unk)", "reserved bits"),
    "BAD_AUTH": ("handle(unk)", "without DA implications"),
    "EXPIRED": ("handle(unk)", "policy has expired"),
    "POLICY_CC": ("handle(unk)", "commandCode in the policy"),
    "BINDING": ("handle(unk)", "not cryptographically bound"),
    "CURVE": ("handle(unk)", "curve not supported"),
    "ECC_POINT": ("handle(unk)", "point is not on the required curve"),
    "CONTEXT_GAP": ("warn(2.0)", "gap for context ID"),
    "OBJECT_MEMORY": ("warn(2.0)", "memory for object contexts"),
    "SESSION_MEMORY": ("warn(2.0)", "memory for session contexts"),
    "MEMORY": ("warn(2.0)", "shared objectsession memory"),
    "SESSION_HANDLES": ("warn(2.0)", "out of session handles"),
    "OBJECT_HANDLES": ("warn(2.0)", "out of object handles"),
    "LOCALITY": ("warn(2.0)", "bad locality"), "YIELDED": ("warn(2.0)", "suspended operation"),
    "CANCELED": ("warn(2.0)", "canceled"), "TESTING": ("warn(2.0)", "selftests"),
    "NV_RATE": ("warn(2.0)", "rate limiting"), "LOCKOUT": ("warn(2.0)", "DA lockout mode"),
    "RETRY": ("warn(2.0)", "not able to start the command"),
    "NV_UNAVAILABLE": ("warn(2.0)", "NV is not current accessible"),
}


def test_every_response_code_means_what_the_tss_decodes_its_value_to() -> None:
    assert set(MEANING) == set(TpmRc.__members__)
    for rc in TpmRc:
        where, text = MEANING[rc.name]
        assert _decoded(rc) == (where, _decoded(rc)[1]), rc.name
        assert text in _decoded(rc)[1], rc.name
        assert describe(rc) == f"TPM_RC_{rc.name}"


# tpm2-tss reads the number of a parameter from bits 8..10 only, where Part 2 Table 15 gives
# it bits 8..11 (parameters 1..15); those codes are compared with the table below instead.
def _tss_reads_whole(code: int) -> bool:
    return not (code & 0x040 and code & 0x800)


@pytest.mark.parametrize("code", sorted(int(code, 16) for code in DECODED))
def test_describe_and_base_code_agree_with_the_tss(code: int) -> None:
    where, text = _decoded(code)
    known = {int(rc) for rc in TpmRc}
    if not is_format_one(code):
        assert base_code(code) == code
        name = f"TPM_RC_{TpmRc(code).name}" if code in known else f"TPM_RC {code:#05x}"
        assert describe(code) == name
        return
    # The same meaning without the number and position: tpm2_rc_decode's "handle(unk)" line.
    assert _decoded(base_code(code)) == ("handle(unk)", text)
    if not _tss_reads_whole(code):
        return
    base = base_code(code)
    name = f"TPM_RC_{TpmRc(base).name}" if base in known else f"TPM_RC {base:#05x}"
    kind, _, number = where.rstrip(")").partition("(")
    if number == "unk":
        place = {"handle": "", "parameter": "a parameter", "session": "a session"}[kind]
    else:
        place = f"{kind} {number}"
    assert describe(code) == (f"{name} ({place})" if place else name)


@pytest.mark.parametrize("rc", [TpmRc.VALUE, TpmRc.HANDLE])
def test_each_numbered_code_is_the_one_the_tss_reads_as_that_place(rc: TpmRc) -> None:
    text = _decoded(rc)[1]
    for number in range(1, 8):
        assert _decoded(for_parameter(rc, number)) == (f"parameter({number})", text)
        assert _decoded(for_handle(rc, number)) == (f"handle({number})", text)
        assert _decoded(for_session(rc, number)) == (f"session({number})", text)


@pytest.mark.parametrize("number", range(8, 16))
def test_parameters_8_to_15_take_bit_11_too(number: int) -> None:
    # Part 2 Table 17: TPM_RC_8 = 0x800 … TPM_RC_F = 0xF00, added with TPM_RC_P (0x040).
    code = for_parameter(TpmRc.VALUE, number)
    assert code == 0x084 + 0x040 + (number << 8)
    assert base_code(code) == TpmRc.VALUE
    assert describe(code) == f"TPM_RC_VALUE (parameter {number})"


@pytest.mark.parametrize("rc", [TpmRc.NV_RANGE, TpmRc.LOCKOUT, TpmRc.INITIALIZE])
def test_a_format_zero_code_names_no_place(rc: TpmRc) -> None:
    for number in (1, 2, 7):
        assert for_parameter(rc, number) == for_handle(rc, number) == for_session(rc, number) == rc
    assert base_code(rc) == rc
    assert not is_format_one(rc)
    assert describe(rc) == f"TPM_RC_{rc.name}"
