"""PKCS#7 SignedData and Authenticode signatures: each check pinned with its error and message.

Every test states one decision of ``cvm.crypto.pkcs7`` or ``cvm.crypto.authenticode`` (which
certificate is the signer, which digest is used, what the signed attributes hold, which content
is accepted, how the encapsulated value's DER header is removed) and fails when that check is
removed or loosened; the mutation run of docs/mutation/crypto.md found them untested. The
SignedData variants are built from the parts of a real signature (DER surgery below), as a
hostile signer could write them.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

import pytest
from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509

from cvm.crypto.authenticode import (
    OID_SPC_PE_IMAGE_DATA,
    AuthenticodeSignature,
    DigestInfo,
    SpcAttributeTypeAndOptionalValue,
    SpcIndirectDataContent,
    sign_digest,
    spc_indirect_data,
)
from cvm.crypto.pkcs7 import (
    OID_DATA,
    OID_SPC_INDIRECT_DATA,
    OID_SPC_SP_OPUS_INFO,
    content_octets,
    parse_any,
    parse_signed_data,
    sign,
    verify_signer,
    verify_with_anchor,
)
from cvm.crypto.x509_edk2 import (
    Certificate,
    PrivateKey,
    der,
    generate_rsa_key,
    issue_certificate,
)
from cvm.errors import ChainError, FormatError, IntegrityError, SignatureError, UsageError


@dataclass(frozen=True)
class Keys:
    root: Certificate
    root_key: PrivateKey
    leaf: Certificate
    leaf_key: PrivateKey
    other_root: Certificate
    other_key: PrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    root_key, leaf_key, other_key = (generate_rsa_key() for _ in range(3))
    root = issue_certificate("Checks Root", root_key)
    leaf = issue_certificate("Checks Leaf", leaf_key, (root, root_key), ca=False, serial=0x5150)
    other_root = issue_certificate("Other Root", other_key)
    return Keys(root, root_key, leaf, leaf_key, other_root, other_key)


def _tlv(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _rebuild(blob: bytes, *, encap: bytes | None = None, certificates: bytes | None = None,
             signer_infos: bytes | None = None) -> bytes:
    """The ContentInfo of ``blob`` with some SignedData fields replaced by raw DER."""
    signed = cms.ContentInfo.load(blob)["content"]
    body = (signed["version"].dump() + signed["digest_algorithms"].dump()
            + (signed["encap_content_info"].dump() if encap is None else encap)
            + (signed["certificates"].dump() if certificates is None else certificates)
            + (signed["signer_infos"].dump() if signer_infos is None else signer_infos))
    oid = core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()
    return _tlv(0x30, oid + _tlv(0xA0, _tlv(0x30, body)))


def _certificates(*certs: Certificate) -> bytes:
    return _tlv(0xA0, b"".join(der(c) for c in certs))


def _with_signer_info(blob: bytes, **fields: object) -> bytes:
    signer = cms.ContentInfo.load(blob)["content"]["signer_infos"][0].copy()
    for name, value in fields.items():
        signer[name] = value
    return _rebuild(blob, signer_infos=_tlv(0x31, signer.dump(force=True)))


# --- the encapsulated content's DER header (X.690 §8.1) -------------------------------------

@pytest.mark.parametrize("encoded,octets", [
    (b"\x30\x00", b""),
    (b"\x04\x01\x05", b"\x05"),
    (b"\x30\x01\xaa", b"\xaa"),
    (b"\x30\x03abc", b"abc"),
    (b"\x30\x1f" + bytes(31), bytes(31)),
    (b"\x30\x7f" + bytes(127), bytes(127)),
    (b"\x30\x81\x00", b""),
    (b"\x30\x81\x80" + bytes(128), bytes(128)),
    (b"\x30\x82\x01\x00" + bytes(256), bytes(256)),
    (b"\x30\x82\x00\x02xy", b"xy"),
    (b"\x30\x84\x00\x00\x00\x01z", b"z"),
])
def test_the_content_octets_of_a_der_value(encoded: bytes, octets: bytes) -> None:
    assert content_octets(OID_SPC_INDIRECT_DATA, encoded) == octets


@pytest.mark.parametrize("encoded,message", [
    (b"", "content is not a DER value"),
    (b"\x30", "content is not a DER value"),
    (b"\x1f\x00", "content is not a DER value"),
    (b"\x3f\x01\x00", "content is not a DER value"),
    (b"\x30\x80\x00\x00", "content has a bad DER length"),
    (b"\x30\x85\x00\x00\x00\x00\x01z", "content has a bad DER length"),
    (b"\x30\x82\x01", "content has a bad DER length"),
    (b"\x30\x81", "content has a bad DER length"),
    (b"\x30\x02a", "content length does not match its DER header"),
    (b"\x30\x01ab", "content length does not match its DER header"),
    (b"\x30\x81\x02abc", "content length does not match its DER header"),
    (b"\x30\x82\x00\x01", "content length does not match its DER header"),
])
def test_a_malformed_der_header_is_refused(encoded: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=f"^PKCS#7: {message}$"):
        content_octets(OID_SPC_INDIRECT_DATA, encoded)


def test_data_content_is_signed_as_it_is_and_absent_content_stays_absent() -> None:
    assert content_octets(OID_DATA, b"\x30\x05raw") == b"\x30\x05raw"
    assert content_octets(OID_DATA, b"plain text") == b"plain text"
    assert content_octets(OID_SPC_INDIRECT_DATA, None) is None
    assert content_octets(OID_DATA, None) is None


# --- parsing --------------------------------------------------------------------------------

def test_the_parsed_signer_names_its_certificate(keys: Keys) -> None:
    signed = parse_signed_data(sign(keys.leaf_key, keys.leaf, OID_DATA, b"x"))
    assert signed.version == 1
    signer = signed.signers[0]
    assert signer.serial == 0x5150
    assert signer.issuer == asn1_x509.Name.load(keys.leaf.issuer.public_bytes()).dump()
    assert signer.certificate == keys.leaf
    assert signed.certificates == (keys.leaf,)
    assert signed.content_octets == b"x"


def test_detached_content_is_none_not_empty(keys: Keys) -> None:
    signed = parse_signed_data(sign(keys.leaf_key, keys.leaf, OID_DATA, b"x", detached=True))
    assert signed.content is None and signed.content_octets is None
    spc = parse_signed_data(sign(keys.leaf_key, keys.leaf, OID_SPC_INDIRECT_DATA,
                                 spc_indirect_data(bytes(32)), detached=True))
    assert spc.content is None and spc.content_octets is None


def test_the_signer_is_the_certificate_with_its_issuer_and_its_serial(keys: Keys) -> None:
    """A certificate with the signer's serial from another issuer, or from the signer's issuer
    with another serial, is not the signer, even when it comes first."""
    blob = sign(keys.leaf_key, keys.leaf, OID_DATA, b"x")
    same_serial = issue_certificate("Checks Leaf", keys.other_key, (keys.other_root,
                                    keys.other_key), ca=False, serial=0x5150)
    same_issuer = issue_certificate("Checks Leaf", keys.other_key, (keys.root, keys.root_key),
                                    ca=False, serial=0x5151)
    decoyed = parse_signed_data(_rebuild(
        blob, certificates=_certificates(same_serial, same_issuer, keys.leaf)))
    assert decoyed.signers[0].certificate == keys.leaf
    assert verify_with_anchor(decoyed, b"x", keys.root) == [keys.leaf, keys.root]
    for decoy in (same_serial, same_issuer):
        without = parse_signed_data(_rebuild(blob, certificates=_certificates(decoy)))
        assert without.signers[0].certificate is None
        with pytest.raises(SignatureError,
                           match=r"^PKCS#7: the signer's certificate is not in the SignedData$"):
            verify_signer(without, b"x")


def test_a_signed_data_without_a_signer_is_refused(keys: Keys) -> None:
    blob = sign(keys.leaf_key, keys.leaf, OID_DATA, b"x")
    with pytest.raises(FormatError, match=r"^PKCS#7 SignedData: no signer$"):
        parse_signed_data(_rebuild(blob, signer_infos=b"\x31\x00"))


def test_only_issuer_and_serial_signer_identifiers_are_read(keys: Keys) -> None:
    blob = sign(keys.leaf_key, keys.leaf, OID_DATA, b"x")
    by_key_id = _with_signer_info(
        blob, version="v3", sid=cms.SignerIdentifier({"subject_key_identifier": bytes(20)}))
    with pytest.raises(FormatError, match=r"^PKCS#7 SignedData: only issuerAndSerialNumber "
                                          r"signer identifiers are supported$"):
        parse_signed_data(by_key_id)


def test_a_content_info_must_carry_signed_data() -> None:
    data_info = cms.ContentInfo({"content_type": "data", "content": b"x"}).dump()
    with pytest.raises(FormatError, match=r"^PKCS#7 SignedData: content type "
                                          r"1\.2\.840\.113549\.1\.7\.1 is not signedData$"):
        parse_signed_data(data_info)
    empty = _tlv(0x30, core.ObjectIdentifier("1.2.840.113549.1.7.2").dump())
    with pytest.raises(FormatError, match=r"^PKCS#7 SignedData: content is not SignedData$"):
        parse_signed_data(empty)
    with pytest.raises(FormatError, match=r"^PKCS#7 SignedData: "):
        parse_any(b"\x30\x03\x02\x01\x01")


# --- verification ---------------------------------------------------------------------------

def test_an_unsupported_digest_is_refused_by_name(keys: Keys) -> None:
    blob = sign(keys.leaf_key, keys.leaf, OID_DATA, b"x")
    md5 = _with_signer_info(blob, digest_algorithm=algos.DigestAlgorithm({"algorithm": "md5"}))
    with pytest.raises(SignatureError, match=r"^PKCS#7: unsupported digest md5$"):
        verify_signer(parse_signed_data(md5), b"x")


def test_message_digest_and_signature_refusals_name_what_failed(keys: Keys) -> None:
    signed = parse_signed_data(sign(keys.leaf_key, keys.leaf, OID_DATA, b"x"))
    with pytest.raises(SignatureError,
                       match=r"^PKCS#7: messageDigest does not match the signed content$"):
        verify_signer(signed, b"y")
    plain = parse_signed_data(sign(keys.leaf_key, keys.leaf, OID_DATA, b"x", attributes=False))
    assert plain.signers[0].signed_attributes is None
    with pytest.raises(SignatureError,
                       match=r"^PKCS#7: the signature does not verify under the signer's key$"):
        verify_signer(plain, b"y")
    with pytest.raises(ChainError, match=r"^PKCS#7: the signer CN=Checks Leaf does not chain to "
                                         r"CN=Other Root$"):
        verify_with_anchor(signed, b"x", keys.other_root)


# --- signing --------------------------------------------------------------------------------

def _attributes(blob: bytes) -> dict[str, list[object]]:
    signer = cms.ContentInfo.load(blob)["content"]["signer_infos"][0]
    return {a["type"].dotted: [v.dump() for v in a["values"]] for a in signer["signed_attrs"]}


def test_signatures_carry_authenticated_attributes_by_default(keys: Keys) -> None:
    blob = sign(keys.leaf_key, keys.leaf, OID_DATA, b"payload")
    signer = parse_signed_data(blob).signers[0]
    assert signer.message_digest == hashlib.sha256(b"payload").digest()
    attributes = _attributes(blob)
    assert set(attributes) == {"1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4"}
    assert OID_SPC_SP_OPUS_INFO not in attributes


def test_the_signing_time_is_an_authenticated_utc_time(keys: Keys) -> None:
    when = datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
    blob = sign(keys.leaf_key, keys.leaf, OID_DATA, b"x", signing_time=when)
    (value,) = _attributes(blob)["1.2.840.113549.1.9.5"]
    assert value == b"\x17\x0d260304050607Z"
    verify_with_anchor(parse_signed_data(blob), b"x", keys.root)


def test_authenticode_signatures_carry_an_empty_opus_info(keys: Keys) -> None:
    blob = sign_digest(bytes(32), keys.leaf_key, keys.leaf)
    assert _attributes(blob)[OID_SPC_SP_OPUS_INFO] == [b"\x30\x00"]


@pytest.mark.parametrize("hash_name,size", [("sha1", 20), ("sha384", 48), ("sha512", 64)])
def test_the_named_hash_is_used_throughout(keys: Keys, hash_name: str, size: int) -> None:
    blob = sign(keys.leaf_key, keys.leaf, OID_DATA, b"x", hash_name=hash_name)
    signed = parse_signed_data(blob)
    assert signed.signers[0].digest_algorithm == hash_name
    assert signed.signers[0].message_digest == hashlib.new(hash_name, b"x").digest()
    verify_with_anchor(signed, b"x", keys.root)
    digest = bytes(range(size))
    signature = AuthenticodeSignature.parse(
        sign_digest(digest, keys.leaf_key, keys.leaf, hash_name=hash_name))
    assert signature.digest_algorithm == hash_name and signature.digest == digest
    assert signature.signed_data.signers[0].digest_algorithm == hash_name
    assert signature.verify(digest, keys.root) == [keys.leaf, keys.root]


def test_an_unknown_hash_is_a_usage_error(keys: Keys) -> None:
    with pytest.raises(UsageError, match=r"^unknown hash 'md5'$"):
        sign(keys.leaf_key, keys.leaf, OID_DATA, b"x", hash_name="md5")


# --- Authenticode ---------------------------------------------------------------------------

def test_authenticode_needs_embedded_spc_indirect_data(keys: Keys) -> None:
    message = "^Authenticode: the SignedData does not carry SpcIndirectDataContent$"
    data = sign(keys.leaf_key, keys.leaf, OID_DATA, spc_indirect_data(bytes(32)))
    with pytest.raises(FormatError, match=message):
        AuthenticodeSignature.parse(data)
    detached = sign(keys.leaf_key, keys.leaf, OID_SPC_INDIRECT_DATA, spc_indirect_data(bytes(32)),
                    detached=True)
    with pytest.raises(FormatError, match=message):
        AuthenticodeSignature.parse(detached)


def test_bytes_after_the_spc_indirect_data_are_refused(keys: Keys) -> None:
    """Refused while the SignedData is read (the explicit [0] must hold one value), before the
    strict SpcIndirectDataContent load that refuses them again."""
    blob = sign_digest(bytes(32), keys.leaf_key, keys.leaf)
    spc = spc_indirect_data(bytes(32)) + b"\x05\x00"
    oid = core.ObjectIdentifier(OID_SPC_INDIRECT_DATA).dump()
    trailing = _rebuild(blob, encap=_tlv(0x30, oid + _tlv(0xA0, spc)))
    with pytest.raises(FormatError, match=r"^PKCS#7 SignedData: "):
        AuthenticodeSignature.parse(trailing)


def test_a_content_that_is_no_spc_indirect_data_is_a_format_error(keys: Keys) -> None:
    blob = sign(keys.leaf_key, keys.leaf, OID_SPC_INDIRECT_DATA, b"\x30\x03\x02\x01\x01")
    with pytest.raises(FormatError, match=r"^Authenticode: SpcIndirectDataContent: "):
        AuthenticodeSignature.parse(blob)


def _spc(data_type: str, algorithm: str, digest: bytes) -> bytes:
    return bytes(SpcIndirectDataContent({
        "data": SpcAttributeTypeAndOptionalValue({"type": data_type}),
        "message_digest": DigestInfo({
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": algorithm}),
            "digest": digest,
        }),
    }).dump())


def test_the_indirect_data_must_be_a_pe_image_digest_of_the_right_size(keys: Keys) -> None:
    def parse(spc: bytes) -> AuthenticodeSignature:
        return AuthenticodeSignature.parse(
            sign(keys.leaf_key, keys.leaf, OID_SPC_INDIRECT_DATA, spc))

    assert parse(_spc(OID_SPC_PE_IMAGE_DATA, "sha256", bytes(32))).digest == bytes(32)
    with pytest.raises(FormatError, match=r"^Authenticode: indirect data type 1\.2\.3 is not "
                                          r"PE image data$"):
        parse(_spc("1.2.3", "sha256", bytes(32)))
    with pytest.raises(FormatError, match=r"^Authenticode: digest of sha256 has 20 bytes$"):
        parse(_spc(OID_SPC_PE_IMAGE_DATA, "sha256", bytes(20)))
    with pytest.raises(FormatError, match=r"^Authenticode: digest of md5 has 16 bytes$"):
        parse(_spc(OID_SPC_PE_IMAGE_DATA, "md5", bytes(16)))


def test_a_different_image_hash_is_an_integrity_error_naming_both(keys: Keys) -> None:
    signature = AuthenticodeSignature.parse(sign_digest(b"\x11" * 32, keys.leaf_key, keys.leaf))
    with pytest.raises(IntegrityError, match=f"^Authenticode: image hash {'22' * 32} differs "
                                             f"from the signed {'11' * 32}$"):
        signature.verify(b"\x22" * 32, keys.root)
