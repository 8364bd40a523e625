"""PKCS#7 / CMS SignedData: parse, verify against one trust anchor (edk2 rules), and sign.

RFC 2315 (PKCS #7 v1.5) §9 SignedData and RFC 5652 §5 (CMS): a signer's signature covers the
DER of its authenticated attributes re-tagged as ``SET OF`` (§5.4), and the ``messageDigest``
attribute holds the digest of the signed content; without attributes the signature covers the
content itself. Authenticode (version-1 SignedData with an SpcIndirectDataContent) signs the
content octets of that SEQUENCE, without its tag and length; EFI_VARIABLE_AUTHENTICATION_2
signs detached data. Verification follows edk2 ``Pkcs7Verify``: the signer certificate comes
from the SignedData's certificates and must chain (partial chain, no time check, any purpose) to
the one trusted certificate given — see :mod:`cvm.crypto.x509_edk2`.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509

from cvm.crypto.x509_edk2 import (
    HASHES,
    Certificate,
    PrivateKey,
    chain_to_anchor,
    der,
    load_certificate,
    serial_of,
    sign_message,
    verify_signature,
)
from cvm.errors import ChainError, FormatError, SignatureError, UsageError

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_SPC_INDIRECT_DATA = "1.3.6.1.4.1.311.2.1.4"
OID_SPC_SP_OPUS_INFO = "1.3.6.1.4.1.311.2.1.12"
SET_TAG = 0x31


@dataclass(frozen=True)
class SignerInfo:
    """One signer: who (issuer and serial), with which digest, and what it signed."""

    issuer: bytes
    serial: int
    digest_algorithm: str
    signature: bytes
    signed_attributes: bytes | None
    message_digest: bytes | None
    certificate: Certificate | None


@dataclass(frozen=True)
class SignedData:
    """A parsed SignedData: content type, embedded content (or None), certificates, signers.

    ``content`` is the raw octets for ``data`` and the whole DER value for other types.
    """

    content_type: str
    content: bytes | None
    certificates: tuple[Certificate, ...]
    signers: tuple[SignerInfo, ...]
    version: int

    @property
    def content_octets(self) -> bytes | None:
        """The embedded content without its outer tag and length (what Authenticode signs)."""
        return content_octets(self.content_type, self.content)


def content_octets(content_type: str, content: bytes | None) -> bytes | None:
    """What a signer digests: ``data`` content as it is, any other type without its DER header."""
    if content is None or content_type == OID_DATA:
        return content
    return _untagged(content)


def _untagged(encoded: bytes) -> bytes:
    """The content octets of one DER TLV (X.690 §8.1: identifier, length, contents)."""
    if len(encoded) < 2 or encoded[0] & 0x1F == 0x1F:
        raise FormatError("PKCS#7: content is not a DER value")
    length = encoded[1]
    start = 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or len(encoded) < 2 + count:
            raise FormatError("PKCS#7: content has a bad DER length")
        length = int.from_bytes(encoded[2 : 2 + count], "big")
        start += count
    if start + length != len(encoded):
        raise FormatError("PKCS#7: content length does not match its DER header")
    return encoded[start:]


def parse_signed_data(data: bytes) -> SignedData:
    """Parse a DER ContentInfo(signedData) or a bare SignedData (as efitools writes it)."""
    try:
        signed = _load(bytes(data))
        certificates = tuple(
            load_certificate(choice.chosen.dump())
            for choice in (signed["certificates"] or [])
            if choice.name == "certificate"
        )
        encap = signed["encap_content_info"]
        content_type = encap["content_type"].dotted
        content_value = encap["content"]
        content: bytes | None
        if content_value is None or isinstance(content_value, core.Void):
            content = None
        elif isinstance(content_value, core.OctetString):
            content = bytes(content_value.native)
        else:
            content = _untagged(bytes(content_value.dump()))
        signers = tuple(_signer(info, certificates) for info in signed["signer_infos"])
        version = int(signed["version"].native[1:])
    except (ValueError, TypeError, KeyError) as error:
        raise FormatError(f"PKCS#7 SignedData: {error}") from None
    if not signers:
        raise FormatError("PKCS#7 SignedData: no signer")
    return SignedData(content_type, content, certificates, signers, version)


def _load(data: bytes) -> cms.SignedData:
    info = cms.ContentInfo.load(data)
    if info["content_type"].dotted == OID_SIGNED_DATA:
        content = info["content"]
        if not isinstance(content, cms.SignedData):
            raise ValueError("content is not SignedData")
        return content
    raise ValueError(f"content type {info['content_type'].dotted} is not signedData")


def _load_bare(data: bytes) -> cms.SignedData:
    signed = cms.SignedData.load(data)
    signed["version"].native  # noqa: B018  (a wrong outer type fails here)
    return signed


def _signer(info: cms.SignerInfo, certificates: tuple[Certificate, ...]) -> SignerInfo:
    sid = info["sid"]
    if sid.name != "issuer_and_serial_number":
        raise ValueError("only issuerAndSerialNumber signer identifiers are supported")
    issuer = sid.chosen["issuer"].dump()
    serial = sid.chosen["serial_number"].native
    attributes = info["signed_attrs"]
    signed_attributes = None
    message_digest = None
    if attributes is not None and len(attributes):
        signed_attributes = bytes([SET_TAG]) + attributes.dump()[1:]
        for attribute in attributes:
            if attribute["type"].dotted == "1.2.840.113549.1.9.4":
                message_digest = bytes(attribute["values"][0].native)
    match = next(
        (c for c in certificates
         if serial_of(c) == serial
         and asn1_x509.Name.load(c.issuer.public_bytes()).dump() == issuer),
        None,
    )
    return SignerInfo(
        issuer=issuer,
        serial=serial,
        digest_algorithm=info["digest_algorithm"]["algorithm"].native,
        signature=bytes(info["signature"].native),
        signed_attributes=signed_attributes,
        message_digest=message_digest,
        certificate=match,
    )


def verify_signer(signed: SignedData, signed_content: bytes) -> SignerInfo:
    """Check every signer's signature over ``signed_content``; return the first signer.

    Raises SignatureError when a signer certificate is missing, the message digest differs or a
    signature does not verify.
    """
    for signer in signed.signers:
        if signer.certificate is None:
            raise SignatureError("PKCS#7: the signer's certificate is not in the SignedData")
        if signer.digest_algorithm not in HASHES:
            raise SignatureError(f"PKCS#7: unsupported digest {signer.digest_algorithm}")
        algorithm = HASHES[signer.digest_algorithm]
        if signer.signed_attributes is not None:
            digest = hashlib.new(signer.digest_algorithm, signed_content).digest()
            if signer.message_digest != digest:
                raise SignatureError("PKCS#7: messageDigest does not match the signed content")
            message = signer.signed_attributes
        else:
            message = signed_content
        if not verify_signature(signer.certificate, signer.signature, message, algorithm):
            raise SignatureError("PKCS#7: the signature does not verify under the signer's key")
    return signed.signers[0]


def verify_with_anchor(
    signed: SignedData, signed_content: bytes, anchor: Certificate
) -> list[Certificate]:
    """edk2 ``Pkcs7Verify`` with one trusted certificate: the chain signer → anchor.

    Raises SignatureError (bad signature) or ChainError (no chain to ``anchor``).
    """
    signer = verify_signer(signed, signed_content)
    assert signer.certificate is not None
    chain = chain_to_anchor(signer.certificate, list(signed.certificates), anchor)
    if chain is None:
        raise ChainError(
            f"PKCS#7: the signer {signer.certificate.subject.rfc4514_string()} does not chain "
            f"to {anchor.subject.rfc4514_string()}"
        )
    return chain


def _digest_algorithm(hash_name: str) -> algos.DigestAlgorithm:
    return algos.DigestAlgorithm({"algorithm": hash_name, "parameters": core.Null()})


def sign(
    key: PrivateKey,
    certificate: Certificate,
    content_type: str,
    content: bytes,
    detached: bool = False,
    extra_certificates: tuple[Certificate, ...] = (),
    hash_name: str = "sha256",
    attributes: bool = True,
    signing_time: datetime.datetime | None = None,
    bare: bool = False,
) -> bytes:
    """A DER SignedData by ``key``/``certificate`` over ``content``.

    ``content`` is the DER of the encapsulated value (for Authenticode, the whole
    SpcIndirectDataContent SEQUENCE; its content octets are what gets digested) or, for
    ``OID_DATA``, the raw bytes. ``detached`` leaves the content out; ``bare`` returns the
    SignedData without its ContentInfo wrapper.
    """
    if hash_name not in HASHES:
        raise UsageError(f"unknown hash {hash_name!r}")
    if content_type == OID_DATA:
        digested = content
        value: core.Asn1Value = core.OctetString(content)
    else:
        digested = _untagged(content)
        value = core.Sequence.load(content).retag("explicit", 0)
    cert_asn1 = asn1_x509.Certificate.load(der(certificate))
    info: dict[str, object] = {
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": {
            "issuer": cert_asn1.issuer, "serial_number": cert_asn1.serial_number,
        }}),
        "digest_algorithm": _digest_algorithm(hash_name),
        "signature_algorithm": algos.SignedDigestAlgorithm(
            {"algorithm": "rsassa_pkcs1v15", "parameters": core.Null()}
        ),
    }
    if attributes:
        entries = [
            cms.CMSAttribute({"type": "content_type", "values": [content_type]}),
            cms.CMSAttribute({"type": "message_digest",
                              "values": [hashlib.new(hash_name, digested).digest()]}),
        ]
        if signing_time is not None:
            entries.append(cms.CMSAttribute({"type": "signing_time", "values": [
                cms.Time({"utc_time": signing_time})]}))
        if content_type == OID_SPC_INDIRECT_DATA:
            entries.append(cms.CMSAttribute.load(
                core.Sequence.load(_spc_opus_info_attribute()).dump()))
        entries.sort(key=lambda a: a.dump())
        signed_attrs = cms.CMSAttributes(entries)
        info["signed_attrs"] = signed_attrs
        message = bytes([SET_TAG]) + signed_attrs.dump()[1:]
    else:
        message = digested
    info["signature"] = sign_message(key, message, hash_name)
    encap: dict[str, object] = {"content_type": content_type}
    if not detached:
        encap["content"] = value
    certs = [cert_asn1, *(asn1_x509.Certificate.load(der(c)) for c in extra_certificates)]
    signed = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [_digest_algorithm(hash_name)],
        "encap_content_info": cms.ContentInfo(encap),
        "certificates": certs,
        "signer_infos": [cms.SignerInfo(info)],
    })
    if bare:
        return bytes(signed.dump())
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def _spc_opus_info_attribute() -> bytes:
    """``SEQUENCE { OID SPC_SP_OPUS_INFO, SET { SEQUENCE {} } }`` (an empty SpcSpOpusInfo)."""
    oid = bytes(core.ObjectIdentifier(OID_SPC_SP_OPUS_INFO).dump())
    values = bytes([SET_TAG, 2, 0x30, 0])
    body = oid + values
    return bytes([0x30, len(body)]) + body


def parse_any(data: bytes) -> SignedData:
    """Parse a ContentInfo-wrapped or a bare SignedData."""
    try:
        return parse_signed_data(data)
    except FormatError:
        try:
            signed = _load_bare(bytes(data))
        except (ValueError, TypeError, KeyError) as error:
            raise FormatError(f"PKCS#7 SignedData: {error}") from None
        wrapped = cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
        return parse_signed_data(wrapped)
