"""Policy digests against the known answers taken on swtpm (notes/tpm.md section 1.3)."""

from __future__ import annotations

import hashlib

import pytest

from cvm.errors import UsageError
from cvm.formats.tpm2.constants import TpmCc, TpmRh
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.templates import ek_policy

PCR7 = hashlib.sha256(bytes(32) + hashlib.sha256(b"abc").digest()).digest()


def test_policy_pcr_known_answers() -> None:
    sel = PcrSelectionList.of("sha256", [7])
    pcr = PolicyDigest.start().pcr(sel, [PCR7])
    assert pcr.hex() == "853032bce513db75735153c94e53e29e7c40e9957eff8ba24390f8f0121118b5"
    assert pcr.auth_value().hex() == (
        "0256f5089dcbc972060c16161f6ad3d11386da850c571222673bb7683d6bcff5"
    )
    multi = PcrSelectionList.parse_text("sha256:0,7+sha1:7")
    value = PolicyDigest.start().pcr(multi, [bytes(32), PCR7, bytes(20)])
    assert value.hex() == "f111b3737ef4de34d5e6a8221f2fed2dd90f9cae20d9c13031e281777206b530"


def test_password_and_auth_value_give_the_same_digest() -> None:
    expected = "8fcd2169ab92694e0c633f1ab772842b8241bbc20288981fc7ac1eddc1fddb0e"
    assert PolicyDigest.start().password().hex() == expected
    assert PolicyDigest.start().auth_value().hex() == expected


def test_ek_policy_is_policy_a_sha256() -> None:
    assert ek_policy().hex() == (
        "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa"
    )
    assert PolicyDigest.start().secret(TpmRh.ENDORSEMENT.to_bytes(4, "big")).value == ek_policy()


def test_authorize_resets_and_or_checks_arity() -> None:
    name = b"\x00\x0b" + bytes(32)
    first = PolicyDigest.start().auth_value().authorize(name)
    second = PolicyDigest.start().authorize(name)
    assert first == second
    assert first != PolicyDigest.start().authorize(name, b"ref")
    with pytest.raises(UsageError):
        PolicyDigest.start().or_([bytes(32)])
    with pytest.raises(UsageError):
        PolicyDigest.start().or_([bytes(32)] * 9)
    with pytest.raises(UsageError):
        PolicyDigest.start().pcr(PcrSelectionList.of("sha256", [0, 7]), [PCR7])


def test_sha1_and_sha384_sessions() -> None:
    assert len(PolicyDigest.start("sha1").auth_value().value) == 20
    assert len(PolicyDigest.start("sha384").command_code(TpmCc.UNSEAL).value) == 48


# ---- known answers computed with hashlib from Part 3 section 23 (codes from Part 2 Table 12) --
def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def test_policy_updates_match_part_3_by_hand() -> None:
    zero, d1, d2 = bytes(32), bytes(range(32)), bytes(range(32, 64))
    name = b"\x00\x0b" + d1
    start = PolicyDigest.start()
    assert start.command_code(0x15E).value == _h(zero, bytes.fromhex("0000016c0000015e"))
    assert start.auth_value().value == _h(zero, bytes.fromhex("0000016b"))
    assert start.password().value == start.auth_value().value
    assert start.or_([d1, d2]).value == _h(zero, bytes.fromhex("00000171"), d1, d2)
    assert start.auth_value().or_([d1, d2]).value == start.or_([d1, d2]).value
    inner = _h(zero, bytes.fromhex("0000016a"), name)
    assert start.auth_value().authorize(name, b"ref").value == _h(inner, b"ref")
    assert start.authorize(name).value == _h(inner)
    assert start.secret(name, b"r").value == _h(_h(zero, bytes.fromhex("00000151"), name), b"r")
    assert start.signed(name).value == _h(_h(zero, bytes.fromhex("00000160"), name))
    assert start.auth_value().authorize_nv(name).value == \
        _h(zero, bytes.fromhex("00000192"), name)


def test_policy_or_takes_two_to_eight_session_digests() -> None:
    start, d = PolicyDigest.start(), bytes(32)
    for count in (0, 1, 9):
        with pytest.raises(UsageError, match="2 to 8"):
            start.or_([d] * count)
    assert start.or_([d] * 8).value == _h(bytes(32), bytes.fromhex("00000171"), d * 8)
    with pytest.raises(UsageError, match="digest of the session hash"):
        start.or_([d, bytes(20)])
    with pytest.raises(UsageError, match="digest of the session hash"):
        start.or_([bytes(33), d])


def test_policy_builder_refusals_name_what_is_wrong() -> None:
    """These messages reach the user of ``cvm tpm policy``: each says what is wrong, exactly."""
    selection = PcrSelectionList.of("sha256", [0, 7])
    with pytest.raises(UsageError) as refused:
        PolicyDigest.start().pcr(selection, [bytes(32)])
    assert str(refused.value) == "PolicyPCR: 2 PCRs selected but 1 values given"
    with pytest.raises(UsageError) as refused:
        PolicyDigest.start().pcr(selection, [bytes(32), bytes(20)])
    assert str(refused.value) == "PolicyPCR: value for PCR 7 has the wrong size"
    with pytest.raises(UsageError) as refused:
        PolicyDigest.start().or_([bytes(32), bytes(20)])
    assert str(refused.value) == "PolicyOR: every branch must be a digest of the session hash"
