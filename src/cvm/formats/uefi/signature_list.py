"""EFI_SIGNATURE_LIST and EFI_SIGNATURE_DATA: the contents of PK, KEK, db, dbx and MokList.

UEFI 2.10 §32.4.1 "Signature Database": a database is a concatenation of lists
``{EFI_GUID SignatureType; u32 SignatureListSize; u32 SignatureHeaderSize; u32 SignatureSize;
u8 SignatureHeader[HeaderSize]; EFI_SIGNATURE_DATA Signatures[]}`` (28-byte fixed part), and each
``EFI_SIGNATURE_DATA`` is ``{EFI_GUID SignatureOwner; u8 SignatureData[SignatureSize - 16]}``.
X.509 lists usually carry one DER certificate each; hash lists any number of digests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from cvm.errors import FormatError, UsageError
from cvm.formats.uefi.guids import (
    EFI_CERT_RSA2048,
    EFI_CERT_RSA2048_SHA1,
    EFI_CERT_RSA2048_SHA256,
    EFI_CERT_SHA1,
    EFI_CERT_SHA224,
    EFI_CERT_SHA256,
    EFI_CERT_SHA384,
    EFI_CERT_SHA512,
    EFI_CERT_TYPE_PKCS7,
    EFI_CERT_X509,
    EFI_CERT_X509_SHA256,
    EFI_CERT_X509_SHA384,
    EFI_CERT_X509_SHA512,
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    SHIM_LOCK_GUID,
    SIGNATURE_DATA_SIZES,
    SIGNATURE_TYPE_NAMES,
)
from cvm.wire import Guid, Layout, raw, u32

__all__ = [
    "EFI_CERT_SHA256", "EFI_CERT_TYPE_PKCS7", "EFI_CERT_X509", "EFI_GLOBAL_VARIABLE",
    "EFI_IMAGE_SECURITY_DATABASE", "SHIM_LOCK_GUID", "SignatureData", "SignatureDatabase",
    "SignatureList", "check_enrolled_lists",
]

SIGNATURE_LIST_HEADER = Layout("EFI_SIGNATURE_LIST", 0x1C, [
    raw("signature_type", 0x00, 16),
    u32("signature_list_size", 0x10),
    u32("signature_header_size", 0x14),
    u32("signature_size", 0x18),
])
OWNER_SIZE = 16
# edk2 AuthVariableLib ``mSupportSigItem``: the types a PK, KEK, db, dbx or dbt may hold when
# written without authentication, each with SignatureHeaderSize 0 and its fixed size (X.509 any).
ENROLLABLE_TYPES = frozenset({
    EFI_CERT_SHA256, EFI_CERT_RSA2048, EFI_CERT_RSA2048_SHA256, EFI_CERT_SHA1,
    EFI_CERT_RSA2048_SHA1, EFI_CERT_X509, EFI_CERT_SHA224, EFI_CERT_SHA384, EFI_CERT_SHA512,
    EFI_CERT_X509_SHA256, EFI_CERT_X509_SHA384, EFI_CERT_X509_SHA512,
})


@dataclass(frozen=True)
class SignatureData:
    """One EFI_SIGNATURE_DATA: the owner GUID and the certificate (DER) or hash."""

    owner: Guid
    data: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> SignatureData:
        if len(data) < OWNER_SIZE:
            raise FormatError(f"EFI_SIGNATURE_DATA: {len(data)} bytes, the owner needs 16")
        return cls(Guid.from_bytes(data[:OWNER_SIZE]), bytes(data[OWNER_SIZE:]))

    def to_bytes(self) -> bytes:
        return self.owner.to_bytes() + self.data


@dataclass(frozen=True)
class SignatureList:
    """One EFI_SIGNATURE_LIST: a type and signatures of equal size (``signature_size``)."""

    signature_type: Guid
    signatures: tuple[SignatureData, ...]
    signature_header: bytes = b""
    signature_size: int = field(default=0)

    def __post_init__(self) -> None:
        sizes = {OWNER_SIZE + len(s.data) for s in self.signatures}
        if len(sizes) > 1:
            raise UsageError("EFI_SIGNATURE_LIST: all signatures of a list must have one size")
        if sizes:
            size = sizes.pop()
            if self.signature_size not in (0, size):
                raise UsageError(f"EFI_SIGNATURE_LIST: SignatureSize {self.signature_size} "
                                 f"differs from the entries' size {size}")
            object.__setattr__(self, "signature_size", size)
        expected = SIGNATURE_DATA_SIZES.get(self.signature_type)
        if expected is not None and self.signature_size not in (0, OWNER_SIZE + expected):
            raise FormatError(
                f"EFI_SIGNATURE_LIST of {self.type_name}: SignatureSize {self.signature_size}, "
                f"expected {OWNER_SIZE + expected}"
            )

    @property
    def type_name(self) -> str:
        return SIGNATURE_TYPE_NAMES.get(self.signature_type, str(self.signature_type))

    @classmethod
    def of(cls, signature_type: Guid, owner: Guid, *payloads: bytes) -> SignatureList:
        """A list of ``signature_type`` holding each payload with the same owner."""
        return cls(signature_type, tuple(SignatureData(owner, p) for p in payloads))

    @classmethod
    def parse_one(cls, data: bytes, offset: int = 0) -> tuple[SignatureList, int]:
        """The list starting at ``offset`` and the offset just after it."""
        end_header = offset + SIGNATURE_LIST_HEADER.size
        if end_header > len(data):
            raise FormatError(f"EFI_SIGNATURE_LIST at {offset:#x}: truncated header")
        header = SIGNATURE_LIST_HEADER.unpack(data[offset:end_header])
        list_size, header_size = header["signature_list_size"], header["signature_header_size"]
        size, kind = header["signature_size"], header["signature_type"]
        assert isinstance(list_size, int) and isinstance(header_size, int)
        assert isinstance(size, int) and isinstance(kind, bytes)
        body = list_size - SIGNATURE_LIST_HEADER.size - header_size
        if offset + list_size > len(data) or body < 0:
            raise FormatError(
                f"EFI_SIGNATURE_LIST at {offset:#x}: SignatureListSize {list_size:#x} does not "
                f"fit the {len(data) - offset:#x} bytes left"
            )
        if (size < OWNER_SIZE and body) or (size and body % size):
            raise FormatError(
                f"EFI_SIGNATURE_LIST at {offset:#x}: {body} bytes of signatures are not a "
                f"multiple of SignatureSize {size}"
            )
        start = end_header + header_size
        signatures = tuple(
            SignatureData.from_bytes(data[start + i : start + i + size])
            for i in range(0, body, size or 1)
        ) if body else ()
        result = cls(Guid.from_bytes(kind), signatures, data[end_header:start], size)
        return result, offset + list_size

    @classmethod
    def from_bytes(cls, data: bytes) -> SignatureList:
        result, end = cls.parse_one(bytes(data))
        if end != len(data):
            raise FormatError(f"EFI_SIGNATURE_LIST: {len(data) - end} trailing bytes")
        return result

    def to_bytes(self) -> bytes:
        body = b"".join(s.to_bytes() for s in self.signatures)
        list_size = SIGNATURE_LIST_HEADER.size + len(self.signature_header) + len(body)
        header = SIGNATURE_LIST_HEADER.pack({
            "signature_type": self.signature_type.to_bytes(),
            "signature_list_size": list_size,
            "signature_header_size": len(self.signature_header),
            "signature_size": self.signature_size,
        })
        return header + self.signature_header + body


@dataclass(frozen=True)
class SignatureDatabase:
    """A variable's worth of signature lists (db, dbx, KEK, PK, MokList)."""

    lists: tuple[SignatureList, ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> SignatureDatabase:
        data = bytes(data)
        lists = []
        offset = 0
        while offset < len(data):
            item, offset = SignatureList.parse_one(data, offset)
            lists.append(item)
        return cls(tuple(lists))

    def to_bytes(self) -> bytes:
        return b"".join(item.to_bytes() for item in self.lists)

    def entries(self) -> Iterator[tuple[Guid, SignatureData]]:
        """Every (signature type, signature data) pair, in order."""
        for item in self.lists:
            for signature in item.signatures:
                yield item.signature_type, signature

    def of_type(self, signature_type: Guid) -> tuple[SignatureData, ...]:
        return tuple(s for kind, s in self.entries() if kind == signature_type)

    def certificates(self) -> tuple[SignatureData, ...]:
        """The EFI_CERT_X509 entries (DER certificates with their owners)."""
        return self.of_type(EFI_CERT_X509)

    def sha256_hashes(self) -> tuple[SignatureData, ...]:
        return self.of_type(EFI_CERT_SHA256)

    def __add__(self, other: SignatureDatabase) -> SignatureDatabase:
        return SignatureDatabase(self.lists + other.lists)

    def __len__(self) -> int:
        return sum(len(item.signatures) for item in self.lists)


def check_enrolled_lists(database: SignatureDatabase, name: str) -> None:
    """Refuse what edk2's ``CheckSignatureListFormat`` refuses in a PK, KEK, db, dbx or dbt
    written without authentication (Setup Mode): a list of a type it does not know, a
    signature header, a fixed-size type without its size, an X.509 list without a
    certificate, and a PK holding more than one signature. FormatError names the list.
    (edk2 also refuses an X.509 list whose first certificate has no RSA key; that check needs
    the certificate parsed, which the caller does.)"""
    for index, item in enumerate(database.lists):
        where = f"{name}: EFI_SIGNATURE_LIST {index} ({item.type_name})"
        if item.signature_type not in ENROLLABLE_TYPES:
            raise FormatError(f"{where}: a signature type the firmware does not take")
        if item.signature_header:
            raise FormatError(f"{where}: SignatureHeaderSize {len(item.signature_header)}, "
                              "the firmware takes 0")
        expected = SIGNATURE_DATA_SIZES.get(item.signature_type)
        if expected is not None and item.signature_size != OWNER_SIZE + expected:
            raise FormatError(f"{where}: SignatureSize {item.signature_size}, "
                              f"expected {OWNER_SIZE + expected}")
        if item.signature_type == EFI_CERT_X509 and not item.signatures:
            raise FormatError(f"{where}: no certificate")   # edk2 reads the first one
    if name == "PK" and len(database) > 1:
        raise FormatError(f"PK: {len(database)} signatures, the firmware takes one")
