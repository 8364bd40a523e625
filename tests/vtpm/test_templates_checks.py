"""The object templates byte for byte: the TCG default EK template L-1 against the real
TPMT_PUBLIC tpm2-tools ships (tests/vectors/tpm/tpm2-tools/ek-template-default.bin), L-2 and
the other templates against their encodings written out from Part 2 (Table 193 TPMT_PUBLIC)
and the documents their docstrings name."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cvm.formats.tpm2.constants import TpmAlg, TpmEccCurve
from cvm.formats.tpm2.public import EccParms, EccPoint, RsaParms, Scheme, SymDefObject
from cvm.vtpm.templates import (
    ak_template,
    ek_policy,
    ek_template,
    public_from_pem,
    sealed_template,
    signing_key_template,
    srk_template,
)

POLICY_A_SHA256 = bytes.fromhex(
    "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
AES128_CFB = "0006" "0080" "0043"


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_ek_policy_is_policy_a_sha256() -> None:
    assert ek_policy() == POLICY_A_SHA256


def test_the_rsa_ek_template_is_the_tcg_default_l1(vectors: Path) -> None:
    data = (vectors / "tpm" / "tpm2-tools" / "ek-template-default.bin").read_bytes()
    assert ek_template("rsa").to_bytes() == data
    assert ek_template().to_bytes() == data


def test_the_ecc_ek_template_is_the_tcg_default_l2() -> None:
    expected = _hex("0023 000b 000300b2 0020" + POLICY_A_SHA256.hex() + AES128_CFB
                    + "0010 0003 0010 0020" + "00" * 32 + "0020" + "00" * 32)
    assert ek_template("ecc").to_bytes() == expected


@pytest.mark.parametrize(("no_da", "attributes"), [(False, "00030072"), (True, "00030472")])
def test_the_srk_templates(no_da: bool, attributes: str) -> None:
    ecc = _hex("0023 000b" + attributes + "0000" + AES128_CFB + "0010 0003 0010 0000 0000")
    assert srk_template("ecc", no_da).to_bytes() == ecc
    rsa_srk = _hex("0001 000b" + attributes + "0000" + AES128_CFB + "0010 0800 00000000 0000")
    assert srk_template("rsa", no_da).to_bytes() == rsa_srk


def test_the_default_srk_is_ecc_without_no_da() -> None:
    assert srk_template().to_bytes() == srk_template("ecc", False).to_bytes()
    assert srk_template().attributes == 0x00030072


def test_the_attestation_key_templates() -> None:
    assert ak_template("rsa").to_bytes() == _hex(
        "0001 000b 00050072 0000 0010 0014 000b 0800 00000000 0000")
    assert ak_template("ecc").to_bytes() == _hex(
        "0023 000b 00050072 0000 0010 0018 000b 0003 0010 0000 0000")
    assert ak_template() == ak_template("ecc")


def test_the_unrestricted_signing_key_templates() -> None:
    assert signing_key_template("rsa").to_bytes() == _hex(
        "0001 000b 00040072 0000 0010 0010 0800 00000000 0000")
    assert signing_key_template("ecc").to_bytes() == _hex(
        "0023 000b 00040072 0000 0010 0010 0003 0010 0000 0000")
    assert signing_key_template() == signing_key_template("ecc")


def test_the_sealed_templates() -> None:
    assert sealed_template().to_bytes() == _hex("0008 000b 00000052 0000 0010 0000")
    assert sealed_template(no_da=True).to_bytes() == _hex("0008 000b 00000452 0000 0010 0000")
    policy = bytes(range(32))
    assert sealed_template(policy).to_bytes() == _hex(
        "0008 000b 00000012 0020" + policy.hex() + "0010 0000")


def test_public_from_an_rsa_pem_writes_the_exponent_out() -> None:
    for exponent in (65537, 3):
        key = rsa.generate_private_key(exponent, 1024).public_key()
        pem = key.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        public = public_from_pem(pem)
        modulus = key.public_numbers().n.to_bytes(128, "big")
        assert public.to_bytes() == _hex("0001 000b 00060040 0000 0010 0010 0400") + (
            exponent.to_bytes(4, "big") + b"\x00\x80" + modulus)
        assert public.parameters == RsaParms(SymDefObject(), Scheme(), 1024, exponent)


@pytest.mark.parametrize(("curve", "tpm_curve", "size"),
                         [(ec.SECP256R1(), TpmEccCurve.NIST_P256, 32),
                          (ec.SECP384R1(), TpmEccCurve.NIST_P384, 48)])
def test_public_from_an_ecc_pem(curve: ec.EllipticCurve, tpm_curve: int, size: int) -> None:
    key = ec.generate_private_key(curve).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    public = public_from_pem(pem)
    numbers = key.public_numbers()
    assert public.type == TpmAlg.ECC
    assert public.name_alg == TpmAlg.SHA256
    assert public.attributes == 0x00060040
    assert public.auth_policy == b""
    assert public.parameters == EccParms(SymDefObject(), Scheme(), tpm_curve, Scheme())
    assert public.unique == EccPoint(numbers.x.to_bytes(size, "big"),
                                     numbers.y.to_bytes(size, "big"))
