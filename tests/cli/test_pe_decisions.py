"""``cvm pe``, one decision at a time: the digest variant (a usage error before the image is
read), what ``show`` describes of an image — format, checksum, hashed ranges, sections, data
directories, each signature and whether it matches, SBAT, the SBAT levels, shim's vendor
certificate — and the lines it prints."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from asn1crypto import cms

from cvm.cli import pe
from cvm.cli.main import execute
from cvm.crypto.authenticode import AuthenticodeSignature
from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate
from cvm.errors import FormatError, UsageError
from cvm.formats.pe.authenticode import digest_of, hashed_layout
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.certificate_table import WinCertificate
from cvm.formats.pe.image import PeImage
from cvm.formats.pe.vendor_cert import VendorCertSection
from cvm.formats.uefi.guids import EFI_CERT_SHA256
from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList
from cvm.image.boot_chain import SHIM_SBAT_LEVEL, make_shim
from cvm.image.signing import attach_signatures, sign_pe, strip_signatures
from cvm.wire import Guid

SBAT = b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"
APP = build_pe([SectionSpec(".text", b"\xc3" * 99, CODE), SectionSpec(".sbat", SBAT)],
               trailer=b"abc")


@pytest.fixture(scope="module")
def signer() -> tuple[object, object]:
    key = generate_rsa_key()
    return key, issue_certificate("signer", key)


@pytest.mark.parametrize("variant", ["edk2", "shim"])
def test_the_variants_are_edk2_and_shim(variant: str) -> None:
    assert pe.hash_variant(variant) == variant


@pytest.mark.parametrize("variant", ["EDK2", "sbsign", ""])
def test_another_variant_is_refused(variant: str) -> None:
    with pytest.raises(UsageError) as refused:
        pe.hash_variant(variant)
    assert str(refused.value) == f"unknown variant {variant!r}: use edk2 or shim"


def test_an_unknown_variant_is_a_usage_error_not_malformed_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.efi"
    path.write_bytes(APP)
    assert execute(["pe", "hash", str(path), "--variant", "sbsign"]) == 64
    assert capsys.readouterr().err == (
        "cvm: error: unknown variant 'sbsign': use edk2 or shim\n")


def test_hash_prints_the_variants_digest_and_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.efi"
    path.write_bytes(APP)
    image = PeImage.parse(APP)
    assert digest_of(image, "sha256", "shim") != digest_of(image, "sha256", "edk2")
    for variant in ("edk2", "shim"):
        assert execute(["pe", "hash", str(path), "--variant", variant]) == 0
        assert capsys.readouterr().out == (
            f"{digest_of(image, 'sha256', variant).hex()}  {path}\n")  # type: ignore[arg-type]


def test_show_describes_the_image() -> None:
    image = PeImage.parse(APP)
    document = pe.describe(image)
    assert document["format"] == "PE32+" and document["machine"] == image.coff["machine"]
    assert document["size"] == len(APP)
    assert document["authenticode_sha256"] == digest_of(image, "sha256").hex()
    assert document["checksum"] == image.optional["check_sum"]
    assert document["checksum_valid"] is (image.optional["check_sum"]
                                          == image.computed_checksum())
    assert document["hashed_ranges"] == [list(r) for r in hashed_layout(image).ranges]
    text = image.sections[0]
    assert document["sections"][0] == {  # type: ignore[index]
        "name": ".text", "virtual_address": text.virtual_address,
        "virtual_size": text.virtual_size, "pointer_to_raw_data": text.pointer_to_raw_data,
        "size_of_raw_data": text.size_of_raw_data, "characteristics": text.characteristics}
    assert document["data_directories"] == [
        {"name": d.name, "virtual_address": d.virtual_address, "size": d.size}
        for d in image.data_directories if d.size]
    assert document["signatures"] == [] and document["sbat"] == [SBAT.decode().strip()]
    assert "vendor_cert" not in document and "sbatlevel" not in document
    assert pe.describe(PeImage.parse(build_pe([SectionSpec(".text", b"\xc3", CODE)],
                                              pe32=True)))["format"] == "PE32"


def test_a_signature_is_described_and_checked_against_the_image(
        signer: tuple[object, object]) -> None:
    key, certificate = signer
    signed = PeImage.parse(sign_pe(APP, key, certificate))  # type: ignore[arg-type]
    entry = signed.certificates[0]
    document = pe.describe(signed)["signatures"][0]  # type: ignore[index]
    assert document == {
        "index": 0, "revision": entry.revision, "type": entry.certificate_type,
        "length": entry.length, "digest_algorithm": "sha256",
        "signed_digest": digest_of(signed, "sha256").hex(), "digest_matches": True,
        "signer": "CN=signer", "certificates": [{"subject": "CN=signer", "issuer": "CN=signer"}]}


def test_a_signature_over_other_bytes_does_not_match(signer: tuple[object, object]) -> None:
    key, certificate = signer
    signed = bytearray(sign_pe(APP, key, certificate))  # type: ignore[arg-type]
    image = PeImage.parse(bytes(signed))
    at = image.sections[0].pointer_to_raw_data
    signed[at] ^= 0xFF
    document = pe.describe(PeImage.parse(bytes(signed)))["signatures"][0]  # type: ignore[index]
    assert document["digest_matches"] is False


def test_a_signature_without_its_signers_certificate_names_no_signer(
        signer: tuple[object, object]) -> None:
    key, certificate = signer
    body, entries = strip_signatures(sign_pe(APP, key, certificate))  # type: ignore[arg-type]
    assert entries[0].pkcs7 is not None
    info = cms.ContentInfo.load(entries[0].pkcs7)
    del info["content"]["certificates"]
    image = PeImage.parse(attach_signatures(body, (WinCertificate(info.dump(force=True)),)))
    document = pe.describe(image)["signatures"][0]  # type: ignore[index]
    assert document["signer"] is None and document["certificates"] == []
    assert document["digest_matches"] is True


def test_a_signature_that_does_not_parse_is_named_with_its_error(
        signer: tuple[object, object]) -> None:
    key, certificate = signer
    signed = bytearray(sign_pe(APP, key, certificate))  # type: ignore[arg-type]
    image = PeImage.parse(bytes(signed))
    entry = image.certificates[0]
    start = len(signed) - entry.length + 8
    signed[start:start + 4] = b"\x00\x00\x00\x00"
    document = pe.describe(PeImage.parse(bytes(signed)))["signatures"][0]  # type: ignore[index]
    assert set(document) == {"index", "revision", "type", "length", "error"}
    broken = PeImage.parse(bytes(signed)).certificates[0].pkcs7
    assert broken is not None
    with pytest.raises(FormatError) as parsed:
        AuthenticodeSignature.parse(broken)
    assert document["error"] == str(parsed.value)


def test_shims_sections_are_described(signer: tuple[object, object]) -> None:
    _, certificate = signer
    vendor = der(certificate)  # type: ignore[arg-type]
    document = pe.describe(PeImage.parse(make_shim(vendor)))
    assert document["sbatlevel"] == {"previous": SHIM_SBAT_LEVEL.previous.to_bytes().decode(),
                                     "latest": SHIM_SBAT_LEVEL.latest.to_bytes().decode()}
    assert document["vendor_cert"] == {"authorized_size": len(vendor),
                                       "authorized_subject": "CN=signer",
                                       "deauthorized_size": 0, "deauthorized_entries": 0}
    assert document["sbat"][0].startswith("sbat,1,")  # type: ignore[index]


@pytest.mark.parametrize(("authorized", "subject"), [(b"", None), (b"not a certificate", None)])
def test_a_vendor_certificate_without_a_subject(authorized: bytes, subject: None) -> None:
    deny = SignatureDatabase((SignatureList.of(EFI_CERT_SHA256, Guid.parse(
        "605dab50-e046-4300-abb6-3dd810dd8b23"), hashlib.sha256(b"a").digest(),
        hashlib.sha256(b"b").digest()),)).to_bytes()
    image = build_pe([SectionSpec(".text", b"\xc3", CODE), SectionSpec(
        ".vendor_cert", VendorCertSection(authorized, deny).to_bytes())])
    document = pe.describe(PeImage.parse(image))
    assert document["vendor_cert"] == {"authorized_size": len(authorized),
                                       "authorized_subject": subject,
                                       "deauthorized_size": len(deny), "deauthorized_entries": 2}
    assert "sbat" not in document


def test_show_prints_each_part() -> None:
    document = {
        "format": "PE32+", "size": 10, "authenticode_sha256": "ab",
        "sections": [{"name": ".text", "virtual_address": 0x1000, "virtual_size": 0x63,
                      "pointer_to_raw_data": 0x400, "size_of_raw_data": 0x200}],
        "signatures": [
            {"index": 0, "digest_algorithm": "sha256", "signed_digest": "cd",
             "digest_matches": True, "signer": "CN=a",
             "certificates": [{"subject": "CN=a", "issuer": "CN=root"}]},
            {"index": 1, "error": "bad"},
            {"index": 2, "digest_algorithm": "sha384", "signed_digest": "ef",
             "digest_matches": False, "signer": None, "certificates": []}],
        "sbat": ["sbat,1", "shim,4"],
        "vendor_cert": {"authorized_subject": "CN=v", "deauthorized_entries": 3},
        "sbatlevel": {"previous": "sbat,1,2022\nshim,2\n", "latest": "sbat,1,2024\n"}}
    assert pe.show_lines(Path("x.efi"), document) == [
        "x.efi: PE32+, 10 bytes", "authenticode sha256: ab", "sections:",
        "  .text          va 0x00001000 vsize 0x63 raw 0x400+0x200",
        "signatures: 3", "  [0] sha256 cd (matches)", "      signer: CN=a",
        "      cert: CN=a  <-  CN=root", "  [1] does not parse: bad",
        "  [2] sha384 ef (DOES NOT MATCH)",
        "      signer: not named (the signature holds no certificate of its signer)",
        "sbat: sbat,1", "sbat: shim,4", "vendor_cert: CN=v; vendor_dbx 3 entries",
        "sbatlevel previous: sbat,1,2022 shim,2", "sbatlevel latest: sbat,1,2024"]
    bare = {"format": "PE32", "size": 1, "authenticode_sha256": "", "sections": [],
            "signatures": []}
    assert pe.show_lines(Path("y"), bare) == ["y: PE32, 1 bytes", "authenticode sha256: ",
                                              "sections:", "signatures: 0"]


def test_show_prints_the_description(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.efi"
    path.write_bytes(APP)
    assert execute(["pe", "show", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == pe.show_lines(
        path, pe.describe(PeImage.parse(APP)))


def test_a_signed_images_certificate_table_is_a_data_directory(
        signer: tuple[object, object]) -> None:
    key, certificate = signer
    signed = PeImage.parse(sign_pe(APP, key, certificate))  # type: ignore[arg-type]
    security = [d for d in signed.data_directories if d.size]
    assert security
    assert pe.describe(signed)["data_directories"] == [
        {"name": d.name, "virtual_address": d.virtual_address, "size": d.size}
        for d in security]
    assert pe.describe(signed)["data_directories"][-1]["size"] == security[-1].size  # type: ignore[index]


def test_a_signature_is_checked_with_its_own_digest_algorithm(
        signer: tuple[object, object]) -> None:
    key, certificate = signer
    signed = PeImage.parse(sign_pe(APP, key, certificate,  # type: ignore[arg-type]
                                   hash_name="sha384"))
    document = pe.describe(signed)["signatures"][0]  # type: ignore[index]
    assert document["digest_algorithm"] == "sha384" and document["digest_matches"] is True
    assert document["signed_digest"] == digest_of(signed, "sha384").hex()
