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
