"""The owner signs PE images (shim, GRUB, kernel, UKI) with their own key, as sbsign does.

Microsoft "Windows Authenticode Portable Executable Signature Format" v1.0 §"Authenticode-Specific
Structures" and Microsoft "PE Format" §"The Attribute Certificate Table": the file is zero-padded
to a multiple of 8 bytes, an Authenticode SignedData over the image hash is wrapped in a
``WIN_CERTIFICATE`` (revision 0x0200, type PKCS_SIGNED_DATA) and appended as the attribute
certificate table, data directory 4 is set to {file offset, size}, and the PE ``CheckSum`` is
recomputed. Signing an image that already carries signatures replaces them, as sbsign does;
``replace=False`` (``cvm sb sign --append``) keeps them and adds one.
"""

from __future__ import annotations

from cvm.crypto.authenticode import sign_digest
from cvm.crypto.x509_edk2 import Certificate, PrivateKey
from cvm.errors import UsageError
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.certificate_table import (
    WinCertificate,
    align8,
    certificate_table_bytes,
)
from cvm.formats.pe.image import PeImage

CHECKSUM_SIZE = 4


def strip_signatures(data: bytes) -> tuple[bytes, tuple[WinCertificate, ...]]:
    """The image without its certificate table (data directory 4 zeroed) and the entries."""
    image = PeImage.parse(data)
    directory = image.certificate_directory_offset
    if directory is None:
        raise UsageError("the image has no certificate table data directory; it cannot be signed")
    table = image.certificate_table
    body = bytearray(data[: table.virtual_address] if table.size else data)
    body[directory : directory + 8] = bytes(8)
    return bytes(body), image.certificates


def attach_signatures(body: bytes, entries: tuple[WinCertificate, ...]) -> bytes:
    """``body`` (no table) padded to 8 bytes with ``entries`` as its certificate table."""
    image = PeImage.parse(body)
    directory = image.certificate_directory_offset
    assert directory is not None
    padded = bytearray(body.ljust(align8(len(body)), b"\0"))
    table = certificate_table_bytes(entries) if entries else b""
    if entries:
        padded[directory : directory + 4] = len(padded).to_bytes(4, "little")
        padded[directory + 4 : directory + 8] = len(table).to_bytes(4, "little")
    signed = PeImage.parse(bytes(padded) + table)
    out = bytearray(signed.data)
    checksum = signed.computed_checksum()
    out[signed.checksum_offset : signed.checksum_offset + CHECKSUM_SIZE] = checksum.to_bytes(
        CHECKSUM_SIZE, "little"
    )
    return bytes(out)


def sign_pe(
    data: bytes,
    key: PrivateKey,
    certificate: Certificate,
    chain: tuple[Certificate, ...] = (),
    hash_name: str = "sha256",
    replace: bool = True,
) -> bytes:
    """``data`` signed by ``key``/``certificate``; ``replace=False`` keeps existing signatures."""
    body, existing = strip_signatures(data)
    padded = body.ljust(align8(len(body)), b"\0")
    digest = image_digest(padded, hash_name)
    signature = sign_digest(digest, key, certificate, chain, hash_name)
    entries = (*(() if replace else existing), WinCertificate(signature))
    return attach_signatures(body, entries)
