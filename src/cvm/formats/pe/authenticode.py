"""The Authenticode image hash of a PE/COFF file, as UEFI firmware and shim compute it.

Microsoft "Windows Authenticode Portable Executable Signature Format" v1.0 §"Calculating the PE
Image Hash", as implemented by edk2 ``DxeImageVerificationLib.c::HashPeImage`` (the firmware):

1. the headers up to ``SizeOfHeaders`` without the 4-byte ``CheckSum`` and without data
   directory 4 (the certificate table entry, when the image has one);
2. every section with ``SizeOfRawData != 0``, in ascending ``PointerToRawData`` order;
3. any data after the last section up to the attribute certificate table (COFF symbols, ...).

shim's ``pe.c::generate_hash`` differs in two ways, both available with ``variant="shim"``:
a signed image must have its certificate table exactly at the end of the hashed data, and an
image without one is hashed as if zero-padded to a multiple of 8 bytes (which is what signing
tools do before appending the table, so ``hash(signed) == hash(pad8(unsigned))``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from cvm.errors import FormatError, UsageError
from cvm.formats.pe.image import PeImage

Variant = Literal["edk2", "shim"]
ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")


@dataclass(frozen=True)
class HashedLayout:
    """What the hash covers: file ranges in hashing order and the zero padding appended."""

    ranges: tuple[tuple[int, int], ...]
    padding: int

    def covers(self, offset: int) -> bool:
        return any(start <= offset < end for start, end in self.ranges)


def hashed_layout(image: PeImage, variant: Variant = "edk2") -> HashedLayout:
    """The ranges of the file the Authenticode hash covers, per ``variant``."""
    data = image.data
    size = len(data)
    checksum = image.checksum_offset
    headers = image.size_of_headers
    ranges: list[tuple[int, int]] = [(0, checksum)]
    cert_dir = image.certificate_directory_offset
    if cert_dir is None:
        ranges.append((checksum + 4, headers))
    else:
        ranges += [(checksum + 4, cert_dir), (cert_dir + 8, headers)]
    hashed = headers
    for section in sorted(image.sections, key=lambda s: s.pointer_to_raw_data):
        if section.size_of_raw_data == 0:
            continue
        start = section.pointer_to_raw_data
        ranges.append((start, start + section.size_of_raw_data))
        hashed += section.size_of_raw_data
    table = image.certificate_table
    cert_size = table.size if cert_dir is not None else 0
    padding = 0
    if variant == "edk2":
        if size > hashed + cert_size:
            ranges.append((hashed, size - cert_size))
        elif size < hashed + cert_size:
            raise FormatError(
                f"Authenticode: sections and headers ({hashed:#x} bytes) and certificate table "
                f"({cert_size:#x}) exceed the file ({size:#x})"
            )
    elif variant == "shim":
        if size > hashed and cert_size:
            rest = size - cert_size - hashed
            if size - hashed < cert_size or hashed + rest != table.virtual_address:
                raise FormatError(
                    "Authenticode (shim): malformed binary after the attribute certificate table"
                )
            ranges.append((hashed, hashed + rest))
        elif size > hashed:
            ranges.append((hashed, size))
            padding = -size % 8
    else:
        raise UsageError(f"unknown Authenticode variant {variant!r}: use edk2 or shim")
    return HashedLayout(tuple((a, b) for a, b in ranges if b > a), padding)


def image_digest(data: bytes, alg: str = "sha256", variant: Variant = "edk2") -> bytes:
    """The Authenticode digest of the PE file ``data`` with hash ``alg`` (edk2 or shim rules)."""
    if alg not in ALGORITHMS:
        raise UsageError(f"unknown hash algorithm {alg!r}: use one of {', '.join(ALGORITHMS)}")
    image = data if isinstance(data, PeImage) else PeImage.parse(data)
    return digest_of(image, alg, variant)


def digest_of(image: PeImage, alg: str = "sha256", variant: Variant = "edk2") -> bytes:
    """The Authenticode digest of an already parsed image."""
    if alg not in ALGORITHMS:
        raise UsageError(f"unknown hash algorithm {alg!r}: use one of {', '.join(ALGORITHMS)}")
    layout = hashed_layout(image, variant)
    hasher = hashlib.new(alg)
    view = memoryview(image.data)
    for start, end in layout.ranges:
        hasher.update(view[start:end])
    hasher.update(b"\0" * layout.padding)
    return hasher.digest()
