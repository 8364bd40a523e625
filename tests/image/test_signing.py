"""Owner signing of PE images: layout as sbsign writes it, checksum, appending, stripping."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.crypto.authenticode import AuthenticodeSignature
from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate
from cvm.errors import UsageError
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.image import PeImage
from cvm.guest.boot.secureboot import as_database, verify_image
from cvm.image.signing import attach_signatures, sign_pe, strip_signatures


@pytest.fixture(scope="module")
def owner() -> tuple[object, object]:
    key = generate_rsa_key()
    return key, issue_certificate("owner", key)


def test_signed_layout(owner: tuple[object, object]) -> None:
    key, cert = owner
    unsigned = build_pe([SectionSpec(".text", b"\xc3" * 333, CODE)], trailer=b"odd")
    signed = sign_pe(unsigned, key, cert)  # type: ignore[arg-type]
    image = PeImage.parse(signed)
    table = image.certificate_table
    assert table.virtual_address == len(unsigned) + (-len(unsigned) % 8)
    assert table.virtual_address + table.size == len(signed)
    assert image.optional["check_sum"] == image.computed_checksum()
    (entry,) = image.certificates
    assert entry.pkcs7 is not None
    assert AuthenticodeSignature.parse(entry.pkcs7).digest == image_digest(signed)
    assert image_digest(signed) == image_digest(unsigned, variant="shim")


def test_append_strip_and_reattach(owner: tuple[object, object]) -> None:
    key, cert = owner
    other = generate_rsa_key()
    unsigned = build_pe([SectionSpec(".text", b"\xc3" * 64, CODE)])
    once = sign_pe(unsigned, key, cert)  # type: ignore[arg-type]
    twice = sign_pe(once, other, issue_certificate("other", other), replace=False)
    assert len(PeImage.parse(twice).certificates) == 2
    assert image_digest(twice) == image_digest(once)
    body, entries = strip_signatures(twice)
    checksum = PeImage.parse(unsigned).checksum_offset
    assert body[:checksum] + body[checksum + 4 :] == unsigned[:checksum] + unsigned[checksum + 4 :]
    assert attach_signatures(body, entries) == twice
    replaced = sign_pe(twice, key, cert)  # type: ignore[arg-type]
    assert len(PeImage.parse(replaced).certificates) == 1


def test_image_without_a_certificate_directory_cannot_be_signed(
    owner: tuple[object, object],
) -> None:
    data = bytearray(build_pe([SectionSpec(".text", b"\xc3", CODE)]))
    image = PeImage.parse(bytes(data))
    count_offset = image.data_directory_offset - 4
    data[count_offset : count_offset + 4] = (4).to_bytes(4, "little")
    key, cert = owner
    with pytest.raises(UsageError) as refused:
        sign_pe(bytes(data), key, cert)  # type: ignore[arg-type]
    assert str(refused.value) == (
        "the image has no certificate table data directory; it cannot be signed")


@pytest.mark.parametrize("role", ["shim", "grub", "kernel"])
def test_checksum_matches_real_signed_binaries(role: str,
                                               debian_boot_binaries: dict[str, Path]) -> None:
    image = PeImage.parse(debian_boot_binaries[role].read_bytes())
    assert image.optional["check_sum"] == image.computed_checksum()


def test_the_signature_names_its_chain_and_hash_and_only_its_key_verifies(
        owner: tuple[object, object]) -> None:
    key, cert = owner
    ca_key = generate_rsa_key()
    ca = issue_certificate("owner CA", ca_key)
    unsigned = build_pe([SectionSpec(".text", b"\xc3" * 99, CODE)], trailer=b"abc")
    signed = sign_pe(unsigned, key, cert, (ca,))  # type: ignore[arg-type]
    (entry,) = PeImage.parse(signed).certificates
    assert entry.pkcs7 is not None
    signature = AuthenticodeSignature.parse(entry.pkcs7)
    assert signature.digest_algorithm == "sha256"
    assert signature.signer == cert
    assert set(signature.signed_data.certificates) == {cert, ca}
    assert verify_image(signed, as_database([der(cert)])).allowed  # type: ignore[arg-type]
    assert not verify_image(signed, as_database([der(ca)])).allowed
    assert verify_image(sign_pe(unsigned, key, cert), as_database([der(cert)])  # type: ignore[arg-type]
                        ).allowed
    sha384 = sign_pe(unsigned, key, cert, hash_name="sha384")  # type: ignore[arg-type]
    (entry,) = PeImage.parse(sha384).certificates
    assert entry.pkcs7 is not None
    signature = AuthenticodeSignature.parse(entry.pkcs7)
    assert signature.digest_algorithm == "sha384"
    assert signature.digest == image_digest(sha384, "sha384")


def test_an_unsigned_image_strips_to_itself_and_reattaches_padded(
        owner: tuple[object, object]) -> None:
    unsigned = build_pe([SectionSpec(".text", b"\xc3" * 3, CODE)], trailer=b"12345")
    assert len(unsigned) % 8
    body, entries = strip_signatures(unsigned)
    assert (body, entries) == (unsigned, ())
    padded = attach_signatures(body, ())
    image = PeImage.parse(padded)
    assert len(padded) == len(unsigned) + (-len(unsigned) % 8)
    assert padded[len(unsigned):] == bytes(len(padded) - len(unsigned))
    assert image.certificate_table.virtual_address == image.certificate_table.size == 0
    assert image.certificates == ()
    assert image.optional["check_sum"] == image.computed_checksum() != 0
    checksum = image.checksum_offset
    assert padded[:checksum] == unsigned[:checksum]
    assert padded[checksum + 4: len(unsigned)] == unsigned[checksum + 4:]


def test_stripping_a_signed_image_zeroes_its_directory_entry(
        owner: tuple[object, object]) -> None:
    key, cert = owner
    unsigned = build_pe([SectionSpec(".text", b"\xc3" * 8, CODE)], trailer=b"1234567")
    signed = sign_pe(unsigned, key, cert)  # type: ignore[arg-type]
    image = PeImage.parse(signed)
    directory = image.certificate_directory_offset
    assert directory is not None
    body, entries = strip_signatures(signed)
    assert entries == image.certificates and len(entries) == 1
    table = image.certificate_table.virtual_address
    assert len(body) == table
    assert body[directory: directory + 8] == bytes(8)
    assert body[:directory] == signed[:directory]
    assert body[directory + 8:] == signed[directory + 8: table]
