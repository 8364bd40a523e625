"""Unusual but real certificates through the firmware's chain rules, each compared with OpenSSL.

edk2 ``Pkcs7Verify`` runs OpenSSL 3.0's ``X509_verify_cert`` with a partial chain, no time check
and any purpose, so ``openssl verify -partial_chain -no_check_time -purpose any`` on the same
files is the oracle — except where edk2 builds OpenSSL with less than the system's: no DSA
(``no-dsa``), no RFC 3779 extensions (``no-rfc3779``) and, in the OpenSSL OVMF links, no EdDSA
(``no-ec``). Those differences are asserted too, so each test states what the real tool does.
"""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa

from cvm.crypto.pkcs7 import parse_signed_data
from cvm.crypto.x509_edk2 import (
    Certificate,
    chain_to_anchor,
    der,
    issued_by,
    load_certificate,
    pem,
    sign_message,
    verify_signature,
)
from cvm.errors import FormatError

START = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | \
    dsa.DSAPrivateKey
Extensions = Iterable[tuple[x509.ExtensionType, bool]]
UNKNOWN_OID = "1.3.6.1.4.1.99999.1"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common_name)])


def _certificate(common_name: str, key: SigningKey, issuer: tuple[Certificate, SigningKey] | None,
                 extensions: Extensions = (), pss: bool = False) -> Certificate:
    """A certificate built by ``cryptography`` exactly as given: no extension is added."""
    issuer_name, issuer_key = ((_name(common_name), key) if issuer is None
                               else (issuer[0].subject, issuer[1]))
    builder = (x509.CertificateBuilder().subject_name(_name(common_name))
               .issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(START)
               .not_valid_after(START + datetime.timedelta(days=3650)))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        return builder.sign(issuer_key, None)
    if pss:
        assert isinstance(issuer_key, rsa.RSAPrivateKey)
        return builder.sign(issuer_key, hashes.SHA256(),
                            rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), 32))
    return builder.sign(issuer_key, hashes.SHA256())


def _der_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def _algorithm(dotted: str) -> bytes:
    """An AlgorithmIdentifier with absent parameters (X.690 OID encoding, RFC 5280 §4.1.1.2)."""
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytes([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        while arc := arc >> 7:
            chunk.insert(0, 0x80 | (arc & 0x7F))
        body += bytes(chunk)
    return _tlv(0x30, _tlv(0x06, body))


def _resigned(tbs: bytes, algorithm: str, signature: bytes) -> Certificate:
    """A Certificate SEQUENCE around ``tbs`` with ``algorithm`` and ``signature`` (§4.1)."""
    return load_certificate(_tlv(0x30, tbs + _algorithm(algorithm)
                                 + _tlv(0x03, b"\x00" + signature)))


def _with_tbs_algorithm(certificate: Certificate, old: str, new: str) -> bytes:
    """The TBSCertificate with its signature AlgorithmIdentifier ``old`` replaced by ``new``."""
    tbs = certificate.tbs_certificate_bytes
    old_der, new_der = _algorithm(old), _algorithm(new)
    for parameters in (b"\x05\x00", b""):
        old_full = old_der[:1] + _der_length(old_der[1] + len(parameters)) + old_der[2:] \
            + parameters
        if old_full in tbs:
            body = tbs[_header_size(tbs):].replace(old_full, new_der, 1)
            return _tlv(0x30, body)
    raise AssertionError("algorithm not found in the TBSCertificate")


def _header_size(encoded: bytes) -> int:
    return 2 + (encoded[1] & 0x7F if encoded[1] & 0x80 else 0)


@dataclass(frozen=True)
class Keys:
    root: rsa.RSAPrivateKey
    mid: rsa.RSAPrivateKey
    leaf: rsa.RSAPrivateKey
    ec_root: ec.EllipticCurvePrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(*(rsa.generate_private_key(65537, 2048) for _ in range(3)),
                ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def root(keys: Keys) -> Certificate:
    return _certificate("Root", keys.root, None, [(x509.BasicConstraints(True, None), True)])


def _ca(ca: bool = True) -> tuple[x509.ExtensionType, bool]:
    return x509.BasicConstraints(ca, None), True


def _key_usage(cert_sign: bool) -> tuple[x509.ExtensionType, bool]:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=False, encipher_only=False,
                         decipher_only=False), True


def _raw(dotted: str, value: bytes, critical: bool = True) -> tuple[x509.ExtensionType, bool]:
    """An extension written byte for byte (any OID, any value)."""
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(dotted), value), critical


# ---------------------------------------------------------------------------------------------
# Cases: (signer, intermediates, anchor) -> does a chain exist, for cvm (edk2) and for the
# system's openssl. Each is built by a function of the keys and the root.

@dataclass(frozen=True)
class Case:
    signer: Certificate
    intermediates: tuple[Certificate, ...]
    anchor: Certificate
    edk2: bool          # edk2's (and so cvm's) verdict
    openssl: bool       # `openssl verify` on this machine (OpenSSL 3 with every algorithm)


def _through_mid(keys: Keys, root: Certificate, extensions: Extensions, edk2: bool,
                 openssl: bool | None = None, pss: bool = False) -> Case:
    mid = _certificate("Mid", keys.mid, (root, keys.root), extensions, pss=pss)
    leaf = _certificate("Leaf", keys.leaf, (mid, keys.mid))
    return Case(leaf, (mid,), root, edk2, edk2 if openssl is None else openssl)


def _case_v3_without_ca_extensions(keys: Keys, root: Certificate) -> Case:
    return _through_mid(keys, root, [], edk2=False)


def _case_v3_root_without_extensions(keys: Keys, root: Certificate) -> Case:
    bare = _certificate("Bare Root", keys.root, None)
    leaf = _certificate("Leaf", keys.leaf, (bare, keys.root))
    return Case(leaf, (), bare, edk2=False, openssl=False)


def _case_ca_with_key_usage_without_cert_sign(keys: Keys, root: Certificate) -> Case:
    return _through_mid(keys, root, [_ca(), _key_usage(False)], edk2=False)


def _case_ca_with_key_usage_cert_sign(keys: Keys, root: Certificate) -> Case:
    return _through_mid(keys, root, [_ca(), _key_usage(True)], edk2=True)


def _case_not_ca_with_key_usage_cert_sign(keys: Keys, root: Certificate) -> Case:
    return _through_mid(keys, root, [_ca(False), _key_usage(True)], edk2=False)


def _case_rsassa_pss_intermediate(keys: Keys, root: Certificate) -> Case:
    return _through_mid(keys, root, [_ca()], edk2=True, pss=True)


def _case_critical_authority_info_access(keys: Keys, root: Certificate) -> Case:
    return _through_mid(keys, root, [_ca(), _raw("1.3.6.1.5.5.7.1.1", b"\x30\x00")],
                        edk2=False)


def _case_critical_subject_key_identifier(keys: Keys, root: Certificate) -> Case:
    return _through_mid(keys, root, [_ca(), _raw("2.5.29.14", b"\x04\x02\x01\x02")],
                        edk2=False)


def _case_critical_extensions_openssl_processes(keys: Keys, root: Certificate) -> Case:
    usage = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CODE_SIGNING])
    policy = x509.CertificatePolicies([x509.PolicyInformation(
        x509.ObjectIdentifier("2.23.140.1.2.1"), None)])
    return _through_mid(keys, root, [_ca(), (usage, True), (policy, True)], edk2=True)


def _case_critical_rfc3779_addresses(keys: Keys, root: Certificate) -> Case:
    # IPAddrBlocks (RFC 3779 §2.2.3): the system's OpenSSL processes it, edk2's is built without
    return _through_mid(keys, root, [_ca(), _raw("1.3.6.1.5.5.7.1.7", b"\x30\x00")],
                        edk2=False, openssl=True)


def _case_critical_unknown_on_the_signer(keys: Keys, root: Certificate) -> Case:
    leaf = _certificate("Leaf", keys.leaf, (root, keys.root),
                        [_raw(UNKNOWN_OID, b"\x05\x00")])
    return Case(leaf, (), root, edk2=False, openssl=False)


def _case_critical_unknown_on_the_anchor(keys: Keys, root: Certificate) -> Case:
    anchor = _certificate("Odd Root", keys.root, None, [_ca(), _raw(UNKNOWN_OID, b"\x05\x00")])
    leaf = _certificate("Leaf", keys.leaf, (anchor, keys.root))
    return Case(leaf, (), anchor, edk2=False, openssl=False)


def _case_signer_is_the_anchor_with_critical_unknown(keys: Keys, root: Certificate) -> Case:
    leaf = _certificate("Leaf", keys.leaf, (root, keys.root),
                        [_raw(UNKNOWN_OID, b"\x05\x00")])
    return Case(leaf, (), leaf, edk2=False, openssl=False)


def _case_ed25519_root(keys: Keys, root: Certificate) -> Case:
    key = ed25519.Ed25519PrivateKey.generate()
    anchor = _certificate("Ed25519 Root", key, None, [_ca()])
    leaf = _certificate("Leaf", keys.leaf, (anchor, key))
    return Case(leaf, (), anchor, edk2=False, openssl=True)


def _case_dsa_root(keys: Keys, root: Certificate) -> Case:
    key = dsa.generate_private_key(2048)
    anchor = _certificate("DSA Root", key, None, [_ca()])
    leaf = _certificate("Leaf", keys.leaf, (anchor, key))
    return Case(leaf, (), anchor, edk2=False, openssl=True)


def _case_ecdsa_root(keys: Keys, root: Certificate) -> Case:
    anchor = _certificate("EC Root", keys.ec_root, None, [_ca()])
    leaf = _certificate("Leaf", keys.leaf, (anchor, keys.ec_root))
    return Case(leaf, (), anchor, edk2=True, openssl=True)


CASES: dict[str, Callable[[Keys, Certificate], Case]] = {
    name.removeprefix("_case_"): function
    for name, function in globals().copy().items() if name.startswith("_case_")
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_chain_decisions_follow_edk2(name: str, keys: Keys, root: Certificate) -> None:
    case = CASES[name](keys, root)
    chain = chain_to_anchor(case.signer, list(case.intermediates), case.anchor)
    if case.edk2:
        assert chain is not None and chain[0] is case.signer and chain[-1] == case.anchor
    else:
        assert chain is None


@pytest.mark.interop
@pytest.mark.parametrize("name", sorted(CASES))
def test_openssl_verify_on_the_same_certificates(name: str, keys: Keys, root: Certificate,
                                                 require_tool: Callable[[str], str],
                                                 tmp_path: Path) -> None:
    case = CASES[name](keys, root)
    anchor, signer = tmp_path / "anchor.pem", tmp_path / "signer.pem"
    anchor.write_bytes(pem(case.anchor))
    signer.write_bytes(pem(case.signer))
    command = [require_tool("openssl"), "verify", "-partial_chain", "-no_check_time",
               "-purpose", "any", "-trusted", str(anchor)]
    if case.intermediates:
        untrusted = tmp_path / "untrusted.pem"
        untrusted.write_bytes(b"".join(pem(c) for c in case.intermediates))
        command += ["-untrusted", str(untrusted)]
    done = subprocess.run([*command, str(signer)], capture_output=True, text=True, check=False)
    assert (done.returncode == 0) is case.openssl, done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------
# Signatures one by one.

def test_rsassa_pss_certificates_verify_with_their_own_parameters(keys: Keys,
                                                                  root: Certificate) -> None:
    mid = _certificate("Mid", keys.mid, (root, keys.root), [_ca()], pss=True)
    assert isinstance(mid.signature_algorithm_parameters, padding.PSS)
    assert issued_by(mid, root)
    data = der(mid)
    assert data.endswith(mid.signature)
    assert not issued_by(load_certificate(data[:-1] + bytes([data[-1] ^ 1])), root)
    # RSASSA-PSS named with its parameters absent (RFC 4055 §3.1 requires them in a
    # certificate's signature): OpenSSL's verification fails, and so does cvm's, without error
    bare = _resigned(mid.tbs_certificate_bytes, "1.2.840.113549.1.1.10", mid.signature)
    assert not issued_by(bare, root)


def test_a_signature_algorithm_that_names_another_key_type_issues_nothing(
        keys: Keys, root: Certificate) -> None:
    """OpenSSL refuses a signature whose algorithm's key type is not the issuer's key type
    ("wrong public key type"), even when the bytes would verify under that key."""
    good = _certificate("Leaf", keys.leaf, (root, keys.root))
    assert issued_by(good, root)
    # ecdsa-with-SHA256 named, RSA PKCS#1 v1.5 bytes by the RSA root
    tbs = _with_tbs_algorithm(good, "1.2.840.113549.1.1.11", "1.2.840.10045.4.3.2")
    as_ecdsa = _resigned(tbs, "1.2.840.10045.4.3.2", sign_message(keys.root, tbs))
    assert isinstance(as_ecdsa.signature_algorithm_parameters, ec.ECDSA)
    assert not issued_by(as_ecdsa, root)
    # sha256WithRSAEncryption named, ECDSA bytes by an EC root
    ec_root = _certificate("Root", keys.ec_root, None, [_ca()])
    ec_leaf = _certificate("Leaf", keys.leaf, (ec_root, keys.ec_root))
    assert issued_by(ec_leaf, ec_root)
    tbs = _with_tbs_algorithm(ec_leaf, "1.2.840.10045.4.3.2", "1.2.840.113549.1.1.11")
    as_rsa = _resigned(tbs, "1.2.840.113549.1.1.11", sign_message(keys.ec_root, tbs))
    assert not issued_by(as_rsa, ec_root)


def test_the_signature_algorithm_inside_and_outside_must_agree(keys: Keys,
                                                               root: Certificate) -> None:
    """OpenSSL compares the two AlgorithmIdentifiers, parameters included ("certificate
    signature failure" when the outer one drops sha256WithRSAEncryption's NULL)."""
    good = _certificate("Leaf", keys.leaf, (root, keys.root))
    tbs = good.tbs_certificate_bytes
    assert issued_by(_resigned(tbs, "1.2.840.113549.1.1.11", good.signature), root) is False
    sha384 = hashes.SHA384()
    outer_only = _tlv(0x30, tbs + _algorithm("1.2.840.113549.1.1.12")[:1]
                      + _der_length(_algorithm("1.2.840.113549.1.1.12")[1] + 2)
                      + _algorithm("1.2.840.113549.1.1.12")[2:] + b"\x05\x00"
                      + _tlv(0x03, b"\x00" + keys.root.sign(tbs, padding.PKCS1v15(), sha384)))
    assert not issued_by(load_certificate(outer_only), root)
    same = _tlv(0x30, tbs + bytes.fromhex("300d06092a864886f70d01010b0500")
                + _tlv(0x03, b"\x00" + good.signature))
    assert same == der(good)
    assert issued_by(load_certificate(same), root)


def test_algorithm_identifiers_of_a_small_certificate(keys: Keys) -> None:
    """A TBSCertificate under 256 bytes (one length octet after 0x81) is read the same way."""
    ec_root = _certificate("R", keys.ec_root, None, [_ca()])
    leaf = _certificate("L", ec.generate_private_key(ec.SECP256R1()), (ec_root, keys.ec_root))
    tbs = leaf.tbs_certificate_bytes
    assert tbs[1] == 0x81 and der(leaf)[1] == 0x82
    assert issued_by(leaf, ec_root)
    sha384 = _algorithm("1.2.840.10045.4.3.3")
    signature = keys.ec_root.sign(tbs, ec.ECDSA(hashes.SHA384()))
    outer_only = _tlv(0x30, tbs + sha384 + _tlv(0x03, b"\x00" + signature))
    assert isinstance(load_certificate(outer_only).signature_hash_algorithm, hashes.SHA384)
    assert not issued_by(load_certificate(outer_only), ec_root)
    both = _with_tbs_algorithm(leaf, "1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3")
    resigned = _tlv(0x30, both + sha384 + _tlv(
        0x03, b"\x00" + keys.ec_root.sign(both, ec.ECDSA(hashes.SHA384()))))
    assert issued_by(load_certificate(resigned), ec_root)


def test_long_algorithm_identifiers_are_compared_whole(keys: Keys, root: Certificate) -> None:
    """AlgorithmIdentifiers longer than 127 bytes (long-form DER lengths) are read whole: equal
    ones agree, and a difference in their last byte is seen."""
    from cvm.crypto.x509_edk2 import _algorithms_agree

    good = _certificate("Leaf", keys.leaf, (root, keys.root))
    assert _algorithms_agree(good)
    for parameters in (bytes(130), bytes(300)):
        identifier = _tlv(0x30, _algorithm(UNKNOWN_OID)[2:] + _tlv(0x04, parameters))
        assert identifier[1] in (0x81, 0x82)
        odd = identifier[:-1] + b"\x01"
        tbs = _tlv(0x30, good.tbs_certificate_bytes[_header_size(good.tbs_certificate_bytes):]
                   .replace(bytes.fromhex("300d06092a864886f70d01010b0500"), identifier, 1))
        for outer, agree in ((identifier, True), (odd, False)):
            certificate = load_certificate(_tlv(0x30, tbs + outer + _tlv(0x03, b"\x00\x01")))
            assert _algorithms_agree(certificate) is agree
            assert not issued_by(certificate, root)


def test_an_unknown_signature_algorithm_issues_nothing(keys: Keys, root: Certificate) -> None:
    good = _certificate("Leaf", keys.leaf, (root, keys.root))
    tbs = _with_tbs_algorithm(good, "1.2.840.113549.1.1.11", UNKNOWN_OID)
    odd = _resigned(tbs, UNKNOWN_OID, sign_message(keys.root, tbs))
    assert odd.issuer == root.subject
    assert not issued_by(odd, root)
    assert chain_to_anchor(odd, [], root) is None


def test_an_eddsa_signature_issues_nothing(keys: Keys) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    anchor = _certificate("Ed25519 Root", key, None, [_ca()])
    leaf = _certificate("Leaf", keys.leaf, (anchor, key))
    assert leaf.signature_hash_algorithm is None
    assert not issued_by(leaf, anchor)


def test_a_dsa_issuer_issues_nothing(keys: Keys) -> None:
    key = dsa.generate_private_key(2048)
    anchor = _certificate("DSA Root", key, None, [_ca()])
    leaf = _certificate("Leaf", keys.leaf, (anchor, key))
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    assert not issued_by(leaf, anchor)


def test_a_pkcs7_signer_key_neither_rsa_nor_ec_never_verifies(keys: Keys) -> None:
    """edk2's PKCS#7 check has no DSA and (in OVMF's OpenSSL) no EdDSA: whatever the bytes."""
    message = b"signed attributes"
    for key in (dsa.generate_private_key(2048), ed25519.Ed25519PrivateKey.generate()):
        signer = _certificate("Signer", key, None)
        signature = (key.sign(message) if isinstance(key, ed25519.Ed25519PrivateKey)
                     else key.sign(message, hashes.SHA256()))
        assert not verify_signature(signer, signature, message, hashes.SHA256())
    rsa_signer = _certificate("Signer", keys.leaf, None)
    assert verify_signature(rsa_signer, sign_message(keys.leaf, message), message,
                            hashes.SHA256())


def test_pkcs7_signer_signatures_by_rsa_and_ec_keys(keys: Keys) -> None:
    message = b"signed attributes"
    for key in (keys.leaf, keys.ec_root):
        signer = _certificate("Signer", key, None)
        for hash_name, algorithm in (("sha256", hashes.SHA256()), ("sha384", hashes.SHA384())):
            signature = sign_message(key, message, hash_name)
            assert verify_signature(signer, signature, message, algorithm)
            assert not verify_signature(signer, signature, message + b"!", algorithm)
            other = hashes.SHA384() if hash_name == "sha256" else hashes.SHA256()
            assert not verify_signature(signer, signature, message, other)


# ---------------------------------------------------------------------------------------------
# Malformed extensions: refused where the certificate is read, as OpenSSL marks them invalid.

def _malformed(keys: Keys, root: Certificate) -> dict[str, bytes]:
    """Certificates whose extensions OpenSSL refuses ("invalid certificate" in
    ``ossl_x509v3_cache_extensions``): a basicConstraints that is not a SEQUENCE, an empty
    one, and basicConstraints twice (RFC 5280 §4.2: at most one instance)."""
    found = {}
    for label, value in (("not a sequence", b"\x04\x01\x00"), ("empty", b"")):
        found[label] = der(_certificate("Leaf", keys.leaf, (root, keys.root),
                                        [_raw("2.5.29.19", value)]))
    once = _certificate("Leaf", keys.leaf, (root, keys.root), [_ca(False)])
    tbs = once.tbs_certificate_bytes
    extension = bytes.fromhex("300c0603551d130101ff04023000")
    extensions_at = tbs.rindex(b"\xa3", 0, tbs.index(extension))
    twice = _tlv(0x30, tbs[_header_size(tbs):extensions_at]
                 + _tlv(0xA3, _tlv(0x30, extension + extension)))
    found["twice"] = _tlv(0x30, twice + _algorithm("1.2.840.113549.1.1.11")
                          + _tlv(0x03, b"\x00" + sign_message(keys.root, twice)))
    return found


def test_malformed_extensions_are_refused_when_the_certificate_is_read(
        keys: Keys, root: Certificate) -> None:
    for data in _malformed(keys, root).values():
        with pytest.raises(FormatError, match=r"^not an X\.509 certificate: "):
            load_certificate(data)
        x509.load_der_x509_certificate(data)  # the outer structure itself parses: lazy fields
        with pytest.raises(FormatError, match=r"^not an X\.509 certificate: "):
            load_certificate(pem(x509.load_der_x509_certificate(data)))


def test_a_signed_data_carrying_a_malformed_certificate_is_a_format_error(
        keys: Keys, root: Certificate) -> None:
    from cvm.crypto.pkcs7 import OID_DATA, sign

    assert parse_signed_data(sign(keys.root, root, OID_DATA, b"payload")).certificates
    for data in _malformed(keys, root).values():
        carried = x509.load_der_x509_certificate(data)
        signed = sign(keys.root, root, OID_DATA, b"payload", extra_certificates=(carried,))
        assert data in signed
        with pytest.raises(FormatError, match=r"^PKCS#7 SignedData: not an X\.509 certificate"):
            parse_signed_data(signed)


@pytest.mark.interop
def test_openssl_refuses_the_malformed_extensions(keys: Keys, root: Certificate,
                                                  require_tool: Callable[[str], str],
                                                  tmp_path: Path) -> None:
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(pem(root))
    for data in _malformed(keys, root).values():
        signer = tmp_path / "signer.der"
        signer.write_bytes(data)
        as_pem = tmp_path / "signer.pem"
        subprocess.run([require_tool("openssl"), "x509", "-inform", "DER", "-in", str(signer),
                        "-out", str(as_pem)], check=True, capture_output=True)
        done = subprocess.run([require_tool("openssl"), "verify", "-partial_chain",
                               "-no_check_time", "-purpose", "any", "-trusted", str(anchor),
                               str(as_pem)], capture_output=True, text=True, check=False)
        assert done.returncode != 0
        assert "invalid certificate" in done.stderr
