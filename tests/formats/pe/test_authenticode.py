"""The Authenticode image hash: real Debian digests, the shim padding, what is and is not hashed."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.pe.authenticode import digest_of, hashed_layout, image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.image import PeImage


def _manifest_digests(vectors: Path) -> dict[str, str]:
    """``path in package`` basename -> ``authenticode sha256`` of Debian's signed binaries."""
    binaries = json.loads((vectors / "secureboot" / "debian-binaries.json").read_text())
    return {
        entry["path"].rsplit("/", 1)[-1]: entry["authenticode_sha256"]
        for entry in binaries
        if entry["authenticode_sha256"]
    }


def _image(trailer: bytes = b"") -> bytes:
    return build_pe([SectionSpec(".text", b"\x55" * 700, CODE), SectionSpec(".data", b"d" * 5)],
                    trailer=trailer)


@pytest.mark.parametrize("role", ["shim", "grub", "kernel"])
def test_digest_equals_the_manifest_and_the_signed_digest(
    role: str, debian_boot_binaries: dict[str, Path], vectors: Path
) -> None:
    from cvm.crypto.authenticode import AuthenticodeSignature

    path = debian_boot_binaries[role]
    data = path.read_bytes()
    digest = image_digest(data)
    expected = _manifest_digests(vectors).get(path.name)
    if expected is not None:
        assert digest.hex() == expected
    image = PeImage.parse(data)
    for entry in image.certificates:
        assert entry.pkcs7 is not None
        assert AuthenticodeSignature.parse(entry.pkcs7).digest == digest
    assert image_digest(data, variant="shim") == digest


def test_shim_pads_unsigned_images_to_eight_bytes() -> None:
    data = _image(trailer=b"abc")
    assert len(data) % 8 == 3
    padded = data + bytes(5)
    assert image_digest(data, variant="shim") == image_digest(padded)
    assert image_digest(data) != image_digest(padded)
    assert hashed_layout(PeImage.parse(data), "shim").padding == 5


def test_checksum_and_certificate_directory_are_not_hashed() -> None:
    data = bytearray(_image())
    image = PeImage.parse(bytes(data))
    before = image_digest(bytes(data))
    layout = hashed_layout(image)
    assert not layout.covers(image.checksum_offset)
    data[image.checksum_offset] ^= 0xFF
    assert image_digest(bytes(data)) == before
    directory = image.certificate_directory_offset
    assert directory is not None
    assert not any(layout.covers(directory + i) for i in range(8))


def test_every_hashed_byte_changes_the_digest() -> None:
    data = _image(trailer=b"trailing symbols")
    image = PeImage.parse(data)
    before = image_digest(data)
    layout = hashed_layout(image)
    for start, end in layout.ranges:
        for offset in {start, (start + end) // 2, end - 1}:
            if offset in (0, 1) or 0x3C <= offset < 0x40:
                continue
            flipped = bytearray(data)
            flipped[offset] ^= 0x01
            with contextlib.suppress(FormatError):
                assert digest_of(PeImage.parse(bytes(flipped))) != before, hex(offset)


def test_trailing_data_is_hashed_by_edk2() -> None:
    assert image_digest(_image(b"x" * 16)) != image_digest(_image(b"y" * 16))


@pytest.mark.parametrize("alg,size", [("sha1", 20), ("sha256", 32), ("sha384", 48),
                                      ("sha512", 64)])
def test_algorithms(alg: str, size: int) -> None:
    assert len(image_digest(_image(), alg)) == size


def test_unknown_algorithm_or_variant() -> None:
    with pytest.raises(UsageError):
        image_digest(_image(), "md5")
    with pytest.raises(UsageError):
        hashed_layout(PeImage.parse(_image()), "other")  # type: ignore[arg-type]


def test_data_after_the_certificate_table(debian_boot_binaries: dict[str, Path]) -> None:
    """shim refuses a binary with bytes after its certificate table; edk2's hash changes."""
    original = debian_boot_binaries["grub"].read_bytes()
    data = original + b"appended"
    assert len(PeImage.parse(data).certificates) == 1
    with pytest.raises(FormatError, match="after the attribute certificate table"):
        image_digest(data, variant="shim")
    assert image_digest(data) != image_digest(original)
