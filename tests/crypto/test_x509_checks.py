"""Every refusal of ``cvm.crypto.x509_chain`` with its exact message, and the CRL parse.

The emulated Milan vendor issues the ARK, ASK, VCEK and CRL; each check is then broken one
at a time (a foreign issuer, another algorithm, a key of another type, a flipped signature
byte, a time outside the window) and the error compared whole, so that a check which stops
checking, or a message which stops naming the failing link, fails a test.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from asn1crypto import pem
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from cvm.amd import Vendor
from cvm.crypto import x509_chain
from cvm.crypto.x509_build import (
    RSASSA_PSS_SHA384_ALGORITHM,
    DistinguishedName,
    der_oid,
    der_sequence,
    tbs_certificate,
    tlv,
)
from cvm.crypto.x509_chain import (
    AMD_PSS,
    Certificate,
    RevocationList,
    SignatureAlgorithm,
    certificate_ders,
    check_crl,
    check_signed_by,
    check_validity,
    load_certificates,
    parse_certificate,
    parse_crl,
)
from cvm.errors import ChainError, FormatError
from cvm.formats.snp.tcb_version import TcbVersion

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)


@cache
def vendor() -> Vendor:
    return Vendor("Milan", clock=lambda: ISSUED)


def chain() -> tuple[Certificate, Certificate, Certificate]:
    milan = vendor()
    chip = milan.manufacture_chip(0)
    vcek = milan.vcek_certificate(chip.chip_id, TcbVersion(boot_loader=4, snp=22, microcode=213))
    return (parse_certificate(milan.ark_certificate), parse_certificate(milan.ask_certificate),
            parse_certificate(vcek))


def _spki(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_the_chain_verifies_link_by_link() -> None:
    ark, ask, vcek = chain()
    check_signed_by(ark, ark)
    check_signed_by(ask, ark)
    check_signed_by(vcek, ask)
    assert ark.algorithm == ask.algorithm == vcek.algorithm == AMD_PSS


def test_each_refusal_of_a_link_names_it() -> None:
    ark, ask, vcek = chain()
    what = "SEV-VCEK <- SEV-Milan-emulated"
    cases: list[tuple[Certificate, Certificate, str]] = [
        (vcek, ark, "SEV-VCEK <- ARK-Milan-emulated: the issuer name does not match the issuing "
         "certificate"),
        (dataclasses.replace(vcek, algorithm=SignatureAlgorithm("sha384_rsa")), ask,
         f"{what}: signature algorithm is not RSASSA-PSS"),
        (dataclasses.replace(vcek, algorithm=dataclasses.replace(AMD_PSS, salt_length=32)), ask,
         f"{what}: RSASSA-PSS parameters are not SHA-384/MGF1-SHA-384/salt 48"),
        (dataclasses.replace(vcek, signature_algorithm=vcek.signature_algorithm + b"\x00"), ask,
         f"{what}: the signature algorithm differs from the signed one"),
        (vcek, dataclasses.replace(ask, spki=vcek.spki),
         f"{what}: the issuing key is not an RSA key"),
        (dataclasses.replace(vcek, signature=bytes(len(vcek.signature))), ask,
         f"{what}: the certificate signature does not verify"),
        (dataclasses.replace(vcek, tbs=vcek.tbs + b"\x00"), ask,
         f"{what}: the certificate signature does not verify"),
    ]
    for child, issuer, message in cases:
        with pytest.raises(ChainError) as caught:
            check_signed_by(child, issuer)
        assert str(caught.value) == message


def test_validity_window_is_inclusive() -> None:
    ark = chain()[0]
    check_validity(ark, ark.not_before)
    check_validity(ark, ark.not_after)
    for moment in (ark.not_before - timedelta(seconds=1), ark.not_after + timedelta(seconds=1)):
        with pytest.raises(ChainError) as caught:
            check_validity(ark, moment)
        assert str(caught.value) == (
            f"ARK-Milan-emulated: not valid at {moment.isoformat()} (valid "
            f"{ark.not_before.isoformat()} to {ark.not_after.isoformat()})"
        )


def test_certificate_keys_and_names() -> None:
    ark, _, vcek = chain()
    assert ark.fingerprint_sha256 == hashlib.sha256(vendor().ark_certificate).hexdigest()
    assert vcek.p384_public_key().curve.name == "secp384r1"
    assert vcek.extension_values() == {oid: value for oid, (_, value) in vcek.extensions.items()}
    assert dataclasses.replace(ark, subject=(("country_name", "US"),)).common_name == ""
    cases = [
        (dataclasses.replace(vcek, spki=b"\x30\x00"), FormatError,
         "SEV-VCEK: malformed public key"),
        (dataclasses.replace(vcek, spki=_spki(ed25519.Ed25519PrivateKey.generate())), ChainError,
         "SEV-VCEK: unsupported public key type"),
        (ark, ChainError, "ARK-Milan-emulated: the key is not an ECDSA P-384 key"),
        (dataclasses.replace(vcek, spki=_spki(ec.generate_private_key(ec.SECP256R1()))),
         ChainError, "SEV-VCEK: the key is not an ECDSA P-384 key"),
    ]
    for cert, error, message in cases:
        with pytest.raises(error) as caught:
            cert.p384_public_key()
        assert str(caught.value) == message


def test_certificate_ders_and_pem() -> None:
    milan = vendor()
    ders = [milan.ask_certificate, milan.ark_certificate]
    armored = b"".join(pem.armor("CERTIFICATE", der) for der in ders)
    assert certificate_ders(ders[0]) == [ders[0]]
    assert certificate_ders(pem.armor("X509 CRL", milan.crl()) + armored) == ders
    assert [c.der for c in load_certificates(armored)] == ders
    with pytest.raises(FormatError) as caught:
        certificate_ders(pem.armor("X509 CRL", milan.crl()))
    assert str(caught.value) == "no CERTIFICATE block in the PEM data"
    with pytest.raises(FormatError) as caught:
        certificate_ders(b"-----BEGIN CERTIFICATE-----\nAA!A\n-----END CERTIFICATE-----\n")
    assert str(caught.value) == "malformed PEM (Incorrect padding)"


def test_pem_is_framed_as_openssl_reads_it() -> None:
    """RFC 7468 boundaries, exactly: OpenSSL and ``cryptography`` refuse a frame with a dash
    missing or an END of another label; text around the blocks, trailing white space and CRLF
    line ends are read."""
    milan = vendor()
    ders = [milan.ask_certificate, milan.ark_certificate]
    one, two = (pem.armor("CERTIFICATE", der) for der in ders)
    crlf = two.replace(b"\n", b"\r\n").replace(b"-----\r", b"-----  \r")
    assert certificate_ders(b"Subject: ASK\n- a note -\n" + one + b"between\n" + crlf) == ders
    end = one.index(b"-----END")
    lines = one[:end].count(b"\n") + 1
    last = f"line {lines} is not the END CERTIFICATE line"
    for bad, message in (
        (one[: end + 22] + b"\n", last),  # a dash short
        (one[:end] + b"-----END X509 CRL-----\n", last),
        (one[:end] + b"-----END CERTIFICATE-----x\n", last),
        (one[:end] + b"-----BEGIN CERTIFICATE-----\n", last),
        (b"-----BEGIN CERTIFICATE----\n" + one[28:], "line 1 is not a BEGIN line"),
        (b"x\n-----BEGIN  CERTIFICATE-----\n" + one[28:], "line 2 is not a BEGIN line"),
        (b"-----BEGIN -CERTIFICATE-----\n" + one[28:], "line 1 is not a BEGIN line"),
        (b"-----BEGIN CERTIFICATE -----\n" + one[28:], "line 1 is not a BEGIN line"),
        (one[:end], "no END line for the CERTIFICATE block"),
        (one + two[: two.index(b"-----END")], "no END line for the CERTIFICATE block"),
    ):
        with pytest.raises(FormatError) as caught:
            certificate_ders(bad)
        assert str(caught.value) == "malformed PEM: " + message + (
            " (-----BEGIN LABEL----- ... -----END LABEL-----)" if "line" in message[:5] else "")
    crl = pem.armor("X509 CRL", milan.crl())
    end_line = crl.count(b"\n")
    with pytest.raises(FormatError) as caught:
        parse_crl(crl[:-2] + b"\n")  # a CRL's frame is checked the same way
    assert str(caught.value) == (f"malformed PEM: line {end_line} is not the END X509 CRL line "
                                 "(-----BEGIN LABEL----- ... -----END LABEL-----)")


def test_a_certificate_with_a_malformed_algorithm_names_it() -> None:
    ark = chain()[0]
    key = ec.generate_private_key(ec.SECP384R1())
    name = DistinguishedName("odd")
    tbs = tbs_certificate(serial=1, issuer=name, subject=name, not_before=ISSUED,
                          not_after=ISSUED, spki_der=_spki(key), extensions=[])
    pss = der_oid("1.2.840.113549.1.1.10")
    no_parameters = der_sequence(pss)
    other_mgf = der_sequence(pss, der_sequence(tlv(0xA1, der_sequence(der_oid("1.2.3.4"),
                                                                      b"\x05\x00"))))
    for algorithm, reason in ((no_parameters, "RSASSA-PSS without parameters"),
                              (other_mgf, "mask generation function 1.2.3.4 is not MGF1")):
        body = tbs + algorithm + b"\x03\x02\x00\x00"
        der = b"\x30\x82" + len(body).to_bytes(2, "big") + body
        with pytest.raises(FormatError) as caught:
            parse_certificate(der)
        assert str(caught.value) == f"not a DER X.509 certificate (certificate: {reason})"
    assert ark.algorithm == AMD_PSS


def crl_at(moment: datetime) -> bytes:
    return Vendor("Milan", clock=lambda: moment).crl()


def test_the_crl_parses_from_der_and_pem() -> None:
    der = crl_at(ISSUED)
    revocations = parse_crl(der)
    assert revocations == parse_crl(pem.armor("X509 CRL", der))
    assert revocations.der == der and revocations.algorithm == AMD_PSS
    assert (revocations.this_update, revocations.next_update) == (ISSUED,
                                                                   ISSUED + timedelta(days=7))
    assert revocations.issuer == chain()[0].subject and revocations.revoked_serials == frozenset()
    for bad, message in (
        (der + b"\x00", "not a DER X.509 CRL (Extra data - 1 bytes of trailing data were "
         "provided)"),
        (b"-----BEGIN X509 CRL-----\nAA!A\n-----END X509 CRL-----\n",
         "malformed PEM CRL (Incorrect padding)"),
        (pem.armor("CERTIFICATE", der), "a PEM CERTIFICATE block, not an X509 CRL"),
    ):
        with pytest.raises(FormatError) as caught:
            parse_crl(bad)
        assert str(caught.value) == message
    no_parameters = bytes.fromhex("300b06092a864886f70d01010a")
    tbs_end = 4 + int.from_bytes(der[6:8], "big") + 4  # 30 82 xxxx | 30 82 yyyy ...
    mutant_body = der[4:tbs_end] + no_parameters + der[tbs_end + 0x48 :]
    mutant = b"\x30\x82" + len(mutant_body).to_bytes(2, "big") + mutant_body
    with pytest.raises(FormatError) as caught:
        parse_crl(mutant)
    assert str(caught.value) == "not a DER X.509 CRL (CRL: RSASSA-PSS without parameters)"


def test_each_refusal_of_a_crl_names_it() -> None:
    ark = chain()[0]
    revocations = parse_crl(crl_at(ISSUED))
    check_crl(revocations, ark, ISSUED)
    check_crl(revocations, ark, ISSUED + timedelta(days=7))
    check_crl(dataclasses.replace(revocations, next_update=None), ark, ISSUED + timedelta(days=700))
    genoa = parse_certificate(Vendor("Genoa", clock=lambda: ISSUED).ark_certificate)
    cases: list[tuple[RevocationList, Certificate, datetime, str]] = [
        (revocations, genoa, ISSUED, "CRL: issuer does not match the root certificate"),
        (dataclasses.replace(revocations, algorithm=SignatureAlgorithm("sha384_rsa")), ark,
         ISSUED, "CRL: signature algorithm is not RSASSA-PSS"),
        (revocations, dataclasses.replace(ark, spki=chain()[2].spki), ISSUED,
         "CRL: the issuing key is not an RSA key"),
        (dataclasses.replace(revocations, signature=bytes(len(revocations.signature))), ark,
         ISSUED, "CRL: the signature does not verify"),
        (revocations, ark, ISSUED - timedelta(seconds=1),
         f"CRL: not current at {(ISSUED - timedelta(seconds=1)).isoformat()}"),
        (revocations, ark, ISSUED + timedelta(days=7, seconds=1),
         f"CRL: not current at {(ISSUED + timedelta(days=7, seconds=1)).isoformat()}"),
    ]
    for crl, issuer, now, message in cases:
        with pytest.raises(ChainError) as caught:
            check_crl(crl, issuer, now)
        assert str(caught.value) == message


def test_data_after_a_certificate_is_refused() -> None:
    der = vendor().ark_certificate
    with pytest.raises(FormatError) as caught:
        parse_certificate(der + b"\x00")
    assert str(caught.value) == (
        "not a DER X.509 certificate (Extra data - 1 bytes of trailing data were provided)")


def test_amds_certificates_never_reach_asn1crypto(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is taken: with the asn1crypto parse removed, the chain still parses."""
    expected = chain()

    def unreachable(der: bytes) -> Certificate:
        raise AssertionError("asn1crypto parse")

    monkeypatch.setattr(x509_chain, "parse_certificate_strictly", unreachable)
    assert chain() == expected
    with pytest.raises(AssertionError, match="asn1crypto parse"):
        parse_certificate(vendor().ark_certificate + b"\x00")


def test_other_algorithms_keep_their_name(vectors: Path) -> None:
    der = (vectors / "secureboot/ms-uefi-ca-2023.der").read_bytes()
    assert parse_certificate(der).algorithm == SignatureAlgorithm("sha256_rsa")


def test_malformed_hash_parameters_name_the_certificate() -> None:
    """RFC 4055: a hash's parameters are NULL or absent. An unknown hash (2.16.840.1.101.3.4.2.99)
    with an empty OCTET STRING for parameters, as the PSS hash and then as MGF1's hash of the
    outer identifier."""
    der = vendor().ark_certificate
    algorithm = der.rindex(RSASSA_PSS_SHA384_ALGORITHM)  # the outer one
    sha384 = bytes.fromhex("06096086480165030402020500")  # sha384, NULL
    unknown = bytes.fromhex("06096086480165030402630400")
    first = der.index(sha384, algorithm)
    for at in (first, der.index(sha384, first + 1)):
        mutant = der[:at] + unknown + der[at + len(unknown) :]
        with pytest.raises(FormatError) as caught:
            parse_certificate(mutant)
        assert str(caught.value) == ("not a DER X.509 certificate (certificate: hash parameters "
                                     "that are neither absent nor NULL)")
