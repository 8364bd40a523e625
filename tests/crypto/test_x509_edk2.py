"""Certificates as the firmware uses them: keys, partial chains, who may issue (OpenSSL's rules)."""

from __future__ import annotations

import base64
import datetime

import pytest
from asn1crypto import x509 as asn1_x509

from cvm.crypto.x509_edk2 import (
    Certificate,
    PrivateKey,
    brief,
    chain_to_anchor,
    der,
    generate_rsa_key,
    issue_certificate,
    issued_by,
    load_certificate,
    load_private_key,
    private_key_pem,
    sign_message,
)
from cvm.errors import FormatError, UsageError

# An Ed25519 key (openssl genpkey -algorithm ed25519): a key type that cannot sign for UEFI.
ED25519_PEM = (b"-----BEGIN PRIVATE KEY-----\n"
               b"MC4CAQAwBQYDK2VwBCIEIJ+Yp7ZpfpYpLe+TcNMiUyPluCbNli8QTRMJJWHAxYc3\n"
               b"-----END PRIVATE KEY-----\n")


def _der_of_pem(pem: bytes) -> bytes:
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    return base64.b64decode(body)


def test_private_keys_in_pem_and_der() -> None:
    key = generate_rsa_key()
    pem = private_key_pem(key)
    expected = key.private_numbers()
    assert load_private_key(pem).private_numbers() == expected  # type: ignore[union-attr]
    assert load_private_key(b"\n  " + pem).private_numbers() == expected  # type: ignore[union-attr]
    assert load_private_key(_der_of_pem(pem)).private_numbers() == expected  # type: ignore[union-attr]


def test_bad_private_keys_are_named() -> None:
    with pytest.raises(FormatError, match=r"^not an unencrypted private key: ") as raised:
        load_private_key(b"\x30\x03\x02\x01\x00")
    assert "may be" not in str(raised.value) and "Details" not in str(raised.value)
    with pytest.raises(FormatError, match=r"^not an unencrypted private key: \S"):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(UsageError, match=r"^only RSA and EC private keys can sign$"):
        load_private_key(ED25519_PEM)


def _v1_certificate(subject: str, key: PrivateKey, issuer: tuple[str, PrivateKey]) -> Certificate:
    """An X.509 v1 certificate (no version field, no extensions), as old CAs issued them."""
    spki = asn1_x509.Certificate.load(der(issue_certificate("spki", key)))[
        "tbs_certificate"]["subject_public_key_info"]
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    tbs = asn1_x509.TbsCertificate({
        "version": "v1",
        "serial_number": 7,
        "signature": {"algorithm": "sha256_rsa"},
        "issuer": asn1_x509.Name.build({"common_name": issuer[0]}),
        "validity": {"not_before": asn1_x509.Time({"utc_time": start}),
                     "not_after": asn1_x509.Time({"utc_time": start.replace(year=2040)})},
        "subject": asn1_x509.Name.build({"common_name": subject}),
        "subject_public_key_info": spki,
    })
    signature = sign_message(issuer[1], tbs.dump())
    certificate = asn1_x509.Certificate({
        "tbs_certificate": tbs, "signature_algorithm": {"algorithm": "sha256_rsa"},
        "signature_value": signature,
    })
    return load_certificate(certificate.dump())


def test_a_self_signed_v1_root_may_issue_and_a_v1_intermediate_may_not() -> None:
    root_key, mid_key, leaf_key = (generate_rsa_key() for _ in range(3))
    root = _v1_certificate("V1 Root", root_key, ("V1 Root", root_key))
    assert root.version.name == "v1"
    leaf = issue_certificate("Leaf", leaf_key, (root, root_key), ca=False)
    assert chain_to_anchor(leaf, [], root) == [leaf, root]
    mid = _v1_certificate("V1 Intermediate", mid_key, ("V1 Root", root_key))
    below = issue_certificate("Below", leaf_key, (mid, mid_key), ca=False)
    assert issued_by(below, mid) and issued_by(mid, root)
    assert chain_to_anchor(below, [mid], root) is None
    assert chain_to_anchor(below, [], mid) is None


def test_key_usage_decides_without_basic_constraints() -> None:
    root_key, mid_key, leaf_key = (generate_rsa_key() for _ in range(3))
    root = issue_certificate("KU Root", root_key)
    for cert_sign in (True, False):
        mid = issue_certificate("KU Intermediate", mid_key, (root, root_key),
                                key_cert_sign=cert_sign)
        leaf = issue_certificate("KU Leaf", leaf_key, (mid, mid_key), ca=False)
        chain = chain_to_anchor(leaf, [mid], root)
        assert (chain == [leaf, mid, root]) is cert_sign
        assert (chain_to_anchor(leaf, [], mid) == [leaf, mid]) is cert_sign


def test_certificates_in_pem_and_der() -> None:
    from cvm.crypto.x509_edk2 import pem

    certificate = issue_certificate("PEM", generate_rsa_key())
    for data in (pem(certificate), b"\n  " + pem(certificate), der(certificate)):
        assert der(load_certificate(data)) == der(certificate)
    with pytest.raises(FormatError, match=r"^not an X\.509 certificate"):
        load_certificate(b"\n" + pem(certificate)[:-40])


def test_ecdsa_chains() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    root_key, other_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = issue_certificate("EC Root", root_key)
    stranger = issue_certificate("EC Root", other_key)
    leaf = issue_certificate("EC Leaf", leaf_key, (root, root_key), ca=False)
    assert issued_by(leaf, root) and not issued_by(leaf, stranger)
    assert chain_to_anchor(leaf, [], root) == [leaf, root]
    assert chain_to_anchor(leaf, [], stranger) is None


@pytest.mark.parametrize(("message", "said"), [
    ("Could not load. It may be many things. Details: ASN.1 parsing error: short data",
     "ASN.1 parsing error: short data"),
    ("Could not load. Details:  ", "Could not load. Details:  "),
    ("Could not load.", "Could not load."),
])
def test_a_loaders_message_is_cut_to_what_went_wrong(message: str, said: str) -> None:
    assert brief(ValueError(message)) == said
