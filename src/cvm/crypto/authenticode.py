"""Authenticode signatures of PE images: SpcIndirectDataContent, verify one entry, sign a digest.

Microsoft "Windows Authenticode Portable Executable Signature Format" v1.0 §"SignedData":
the SignedData's content type is SPC_INDIRECT_DATA_OBJID (1.3.6.1.4.1.311.2.1.4) and its content
``SpcIndirectDataContent ::= SEQUENCE { data SpcAttributeTypeAndOptionalValue,
messageDigest DigestInfo }``, where ``data`` is ``{ SPC_PE_IMAGE_DATAOBJ (…2.1.15),
SpcPeImageData { flags BIT STRING, file [0] SpcLink } }`` and ``messageDigest`` holds the image's
Authenticode hash. edk2 ``AuthenticodeVerify`` checks that content type, verifies the PKCS#7 over
the SEQUENCE's content octets, and the caller compares the digest with its own image hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from asn1crypto import algos, core

from cvm.crypto.pkcs7 import (
    OID_SPC_INDIRECT_DATA,
    SignedData,
    parse_signed_data,
    sign,
    verify_with_anchor,
)
from cvm.crypto.x509_edk2 import Certificate, PrivateKey
from cvm.errors import FormatError, IntegrityError

OID_SPC_PE_IMAGE_DATA = "1.3.6.1.4.1.311.2.1.15"
DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}


class SpcAttributeTypeAndOptionalValue(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar = [("type", core.ObjectIdentifier), ("value", core.Any, {"optional": True})]


class DigestInfo(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar = [
        ("digest_algorithm", algos.DigestAlgorithm), ("digest", core.OctetString),
    ]


class SpcIndirectDataContent(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar = [
        ("data", SpcAttributeTypeAndOptionalValue), ("message_digest", DigestInfo),
    ]


@dataclass(frozen=True)
class AuthenticodeSignature:
    """One WIN_CERTIFICATE's signature: the SignedData and the image digest it vouches for."""

    signed_data: SignedData
    digest_algorithm: str
    digest: bytes

    @property
    def signed_content(self) -> bytes:
        octets = self.signed_data.content_octets
        assert octets is not None
        return octets

    @property
    def signer(self) -> Certificate | None:
        return self.signed_data.signers[0].certificate

    @classmethod
    def parse(cls, pkcs7: bytes) -> AuthenticodeSignature:
        signed = parse_signed_data(pkcs7)
        if signed.content_type != OID_SPC_INDIRECT_DATA or signed.content is None:
            raise FormatError("Authenticode: the SignedData does not carry SpcIndirectDataContent")
        try:
            spc = SpcIndirectDataContent.load(signed.content, strict=True)
            algorithm = spc["message_digest"]["digest_algorithm"]["algorithm"].native
            digest = bytes(spc["message_digest"]["digest"].native)
            data_type = spc["data"]["type"].dotted
        except (ValueError, TypeError, KeyError) as error:
            raise FormatError(f"Authenticode: SpcIndirectDataContent: {error}") from None
        if data_type != OID_SPC_PE_IMAGE_DATA:
            raise FormatError(f"Authenticode: indirect data type {data_type} is not PE image data")
        if DIGEST_SIZES.get(algorithm) != len(digest):
            raise FormatError(f"Authenticode: digest of {algorithm} has {len(digest)} bytes")
        return cls(signed, algorithm, digest)

    def verify(self, image_digest: bytes, anchor: Certificate) -> list[Certificate]:
        """The chain to ``anchor`` when the signature is good and the digest is the image's.

        Raises IntegrityError (the image hash differs), SignatureError or ChainError.
        """
        if image_digest != self.digest:
            raise IntegrityError(
                f"Authenticode: image hash {image_digest.hex()} differs from the signed "
                f"{self.digest.hex()}"
            )
        return verify_with_anchor(self.signed_data, self.signed_content, anchor)


def spc_indirect_data(digest: bytes, hash_name: str = "sha256") -> bytes:
    """The DER SpcIndirectDataContent for an image digest (flags empty, file = empty unicode)."""
    # SpcPeImageData { flags BIT STRING {}, file [0] SpcLink.file [2] SpcString.unicode [0] "" }
    pe_image_data = bytes.fromhex("3009030100a004a2028000")
    spc = SpcIndirectDataContent({
        "data": SpcAttributeTypeAndOptionalValue({
            "type": OID_SPC_PE_IMAGE_DATA, "value": core.Any.load(pe_image_data),
        }),
        "message_digest": DigestInfo({
            "digest_algorithm": algos.DigestAlgorithm(
                {"algorithm": hash_name, "parameters": core.Null()}
            ),
            "digest": digest,
        }),
    })
    return bytes(spc.dump())


def sign_digest(
    digest: bytes,
    key: PrivateKey,
    certificate: Certificate,
    chain: tuple[Certificate, ...] = (),
    hash_name: str = "sha256",
) -> bytes:
    """A DER ContentInfo(SignedData) Authenticode signature over an image digest."""
    return sign(
        key, certificate, OID_SPC_INDIRECT_DATA, spc_indirect_data(digest, hash_name),
        extra_certificates=chain, hash_name=hash_name,
    )
