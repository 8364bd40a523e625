"""One test per chain and report check, each failing when its check is removed.

Each builds evidence that breaks exactly one rule and is otherwise authentic — signed by the
real keys of a trusted (emulated) root — so that only the rule under test can refuse it:
BasicConstraints on the ARK and the ASK, the ARK's self-signature, the VCEK's productName
against the trusted root, and MASK_CHIP_KEY in the report.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cvm.amd import Vendor
from cvm.amd.authority import ROOT_LIFETIME, ROOT_NOT_BEFORE, emulated_name
from cvm.attestation.verifier import ChainVerifier, TrustRoots
from cvm.crypto import amd_ecdsa
from cvm.crypto.rsa_pss import public_key_der
from cvm.crypto.x509_build import (
    OID_BASIC_CONSTRAINTS,
    OID_KEY_USAGE,
    Extension,
    basic_constraints_ca,
    der_sequence,
    key_usage,
    sign_rsassa_pss,
    tbs_certificate,
)
from cvm.errors import ChainError, SignatureError
from cvm.formats.snp.signer_info import SignerInfo, SigningKey
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.formats.snp.vcek_extensions import VcekExtensions

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
AT = datetime(2026, 6, 1, tzinfo=UTC)
TCB = TcbVersion(boot_loader=4, snp=22, microcode=213)
SALT = bytes(range(48))
NOT_A_CA = der_sequence()  # BasicConstraints with cA absent (FALSE)


@pytest.fixture(scope="module")
def vendor() -> Vendor:
    return Vendor("Milan", clock=lambda: ISSUED)


def _ca(subject: str, issuer: str, spki: bytes, signer: Any, extensions: list[Extension]) -> bytes:
    tbs = tbs_certificate(
        serial=0x10001, issuer=emulated_name(issuer), subject=emulated_name(subject),
        not_before=ROOT_NOT_BEFORE, not_after=ROOT_NOT_BEFORE + ROOT_LIFETIME, spki_der=spki,
        extensions=extensions,
    )
    return sign_rsassa_pss(tbs, signer, SALT)


def _usage() -> Extension:
    return Extension(OID_KEY_USAGE, key_usage(cert_sign=True, crl_sign=True), True)


def _verify(vendor: Vendor, vcek: bytes, ask: bytes | None = None,
            ark: bytes | None = None) -> None:
    ark = ark or vendor.ark_certificate
    roots = TrustRoots.of([("Milan", hashlib.sha256(ark).hexdigest())], "test")
    ChainVerifier(roots).verify(vcek, ask or vendor.ask_certificate, ark, AT)


def _vcek(vendor: Vendor, product_name: str = "Milan-B0") -> bytes:
    chip = vendor.manufacture_chip(5)
    key = vendor.kds.vcek_private_key(chip.chip_id, TCB)
    claims = VcekExtensions(product_name, TCB, chip.chip_id)
    tbs = tbs_certificate(
        serial=0, issuer=vendor.authority.ask_name, subject=emulated_name("SEV-VCEK"),
        not_before=ISSUED, not_after=ISSUED + timedelta(days=365),
        spki_der=amd_ecdsa.public_key_der(key.public_key()),
        extensions=[Extension(oid, value) for oid, value in claims.to_extensions()],
    )
    return sign_rsassa_pss(tbs, vendor.authority.ask_key, SALT)


def test_the_unbroken_chain_verifies(vendor: Vendor) -> None:
    _verify(vendor, _vcek(vendor))
    root = vendor.authority.root
    ark_spki = public_key_der(root.ark_key.public_key())
    ark = _ca("ARK-Milan-emulated", "ARK-Milan-emulated", ark_spki, root.ark_key,
              [_usage(), Extension(OID_BASIC_CONSTRAINTS, basic_constraints_ca(None), True)])
    ask = _ca("SEV-Milan-emulated", "ARK-Milan-emulated",
              public_key_der(root.ask_key.public_key()), root.ark_key,
              [Extension(OID_BASIC_CONSTRAINTS, basic_constraints_ca(0), True)])
    _verify(vendor, _vcek(vendor), ask, ark)  # the builders below make valid CAs by default


@pytest.mark.parametrize("constraint", [
    None,  # no BasicConstraints at all
    Extension(OID_BASIC_CONSTRAINTS, NOT_A_CA, True),
    Extension(OID_BASIC_CONSTRAINTS, basic_constraints_ca(0), False),  # not critical
])
def test_the_ask_must_be_a_ca(vendor: Vendor, constraint: Extension | None) -> None:
    root = vendor.authority.root
    ask = _ca("SEV-Milan-emulated", "ARK-Milan-emulated",
              public_key_der(root.ask_key.public_key()), root.ark_key,
              [constraint] if constraint else [])
    with pytest.raises(ChainError, match="SEV-Milan-emulated: not marked as a CA"):
        _verify(vendor, _vcek(vendor), ask=ask)


@pytest.mark.parametrize("constraint", [
    None,
    Extension(OID_BASIC_CONSTRAINTS, NOT_A_CA, True),
    Extension(OID_BASIC_CONSTRAINTS, basic_constraints_ca(None), False),
])
def test_the_ark_must_be_a_ca(vendor: Vendor, constraint: Extension | None) -> None:
    root = vendor.authority.root
    extensions = [_usage(), *([constraint] if constraint else [])]
    ark = _ca("ARK-Milan-emulated", "ARK-Milan-emulated",
              public_key_der(root.ark_key.public_key()), root.ark_key, extensions)
    with pytest.raises(ChainError, match="ARK-Milan-emulated: not marked as a CA"):
        _verify(vendor, _vcek(vendor), ark=ark)


def test_the_ark_must_sign_itself(vendor: Vendor) -> None:
    """A pinned ARK whose own signature is broken is refused, though its key signs the ASK."""
    broken = bytearray(vendor.ark_certificate)
    broken[-1] ^= 1  # the last byte of the ARK's signature
    with pytest.raises(ChainError, match="ARK-Milan-emulated <- ARK-Milan-emulated"):
        _verify(vendor, _vcek(vendor), ark=bytes(broken))


@pytest.mark.parametrize("name", ["Genoa-B0", "Turin", "Milanese-B0", "milan-B0", "B0-Milan"])
def test_the_vcek_must_name_the_roots_product(vendor: Vendor, name: str) -> None:
    with pytest.raises(ChainError, match=f"the VCEK is for product '{name}'"):
        _verify(vendor, _vcek(vendor, name))


@pytest.mark.parametrize("name", ["Milan", "Milan-B1"])
def test_the_roots_product_with_any_stepping_is_accepted(vendor: Vendor, name: str) -> None:
    _verify(vendor, _vcek(vendor, name))


def test_a_report_with_mask_chip_key_is_refused(emulated: Any) -> None:
    """MASK_CHIP_KEY set says the chip did not sign: refused even with a valid signature."""
    masked = emulated.report.replace(signer_info=SignerInfo(mask_chip_key=True))
    evidence = emulated.evidence(emulated.sign(masked))
    with pytest.raises(SignatureError, match="MASK_CHIP_KEY"):
        emulated.verifier.verify(evidence)
    author = emulated.report.replace(signer_info=SignerInfo(author_key_en=True))
    emulated.verifier.verify(emulated.evidence(emulated.sign(author)))


def test_a_vcek_without_amds_extensions_is_refused(vendor: Vendor) -> None:
    chip = vendor.manufacture_chip(5)
    key = vendor.kds.vcek_private_key(chip.chip_id, TCB)
    tbs = tbs_certificate(
        serial=0, issuer=vendor.authority.ask_name, subject=emulated_name("SEV-VCEK"),
        not_before=ISSUED, not_after=ISSUED + timedelta(days=365),
        spki_der=amd_ecdsa.public_key_der(key.public_key()), extensions=[],
    )
    bare = sign_rsassa_pss(tbs, vendor.authority.ask_key, SALT)
    with pytest.raises(ChainError, match=r"^VCEK extensions: "):
        _verify(vendor, bare)


def test_refusals_of_the_report_signer_say_why(emulated: Any) -> None:
    masked = emulated.report.replace(signer_info=SignerInfo(mask_chip_key=True))
    with pytest.raises(SignatureError) as refused:
        emulated.verifier.verify(emulated.evidence(emulated.sign(masked)))
    assert str(refused.value) == "the report is not signed (MASK_CHIP_KEY is set)"
    vlek = emulated.report.replace(signer_info=SignerInfo(signing_key=SigningKey.VLEK))
    with pytest.raises(SignatureError) as refused:
        emulated.verifier.verify(emulated.evidence(emulated.sign(vlek)))
    assert str(refused.value) == (
        "the report is signed by the VLEK key; only VCEK chains are supported"
    )
    other = emulated.report.replace(signature_algo=2)
    with pytest.raises(SignatureError) as refused:
        emulated.verifier.verify(emulated.evidence(emulated.sign(other)))
    assert str(refused.value) == "unknown report signature algorithm 2 (1 = ECDSA P-384)"
