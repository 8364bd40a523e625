"""Authenticode interop with real tools: pesign, sbsign/sbverify and openssl smime (edk2 rules).

``openssl smime -verify -partial_chain -no_check_time -purpose any`` is the oracle for edk2's
``Pkcs7Verify``; ``sbverify`` is not used as a negative oracle for Microsoft-signed shim because
it accepts any certificate when the signature embeds an intermediate.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.crypto.authenticode import AuthenticodeSignature
from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate, pem, private_key_pem
from cvm.formats.pe.authenticode import hashed_layout, image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.image import PeImage
from cvm.guest.boot.secureboot import as_database, verify_image

pytestmark = pytest.mark.interop
Tool = Callable[[str], str]


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)


def _smime_verify(require_tool: Tool, tmp_path: Path, pkcs7: bytes, ca_pem: bytes) -> bool:
    signature = AuthenticodeSignature.parse(pkcs7)
    (tmp_path / "sig.p7").write_bytes(pkcs7)
    (tmp_path / "content.bin").write_bytes(signature.signed_content)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    done = _run(require_tool("openssl"), "smime", "-verify", "-inform", "DER",
                "-in", tmp_path / "sig.p7", "-binary", "-content", tmp_path / "content.bin",
                "-CAfile", tmp_path / "ca.pem", "-purpose", "any", "-partial_chain",
                "-no_check_time", "-out", "/dev/null")
    return done.returncode == 0


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    folder = tmp_path_factory.mktemp("owner")
    key = generate_rsa_key()
    cert = issue_certificate("cvm test owner", key, ca=False)
    (folder / "owner.key").write_bytes(private_key_pem(key))
    (folder / "owner.pem").write_bytes(pem(cert))
    return folder / "owner.key", folder / "owner.pem", der(cert)


@pytest.mark.parametrize("role", ["shim", "grub", "kernel"])
def test_hash_equals_pesign(role: str, debian_boot_binaries: dict[str, Path],
                            require_tool: Tool, capsys: pytest.CaptureFixture[str]) -> None:
    path = debian_boot_binaries[role]
    done = _run(require_tool("pesign"), "-h", "-i", path)
    assert done.returncode == 0, done.stderr
    expected = done.stdout.split("hash:")[-1].split()[0]
    assert execute(["pe", "hash", str(path)]) == 0
    assert capsys.readouterr().out.split()[0] == expected == image_digest(path.read_bytes()).hex()


def test_shim_signatures_match_openssl_smime(debian_boot_binaries: dict[str, Path],
                                            vectors: Path, require_tool: Tool,
                                            tmp_path: Path) -> None:
    data = debian_boot_binaries["shim"].read_bytes()
    entries = [e.pkcs7 for e in PeImage.parse(data).certificates]
    fresh = issue_certificate("Microsoft Corporation UEFI CA 2011", generate_rsa_key())
    secureboot = vectors / "secureboot"
    cases = [(0, secureboot / "ms-uefi-ca-2011", True), (1, secureboot / "ms-uefi-ca-2023", True),
             (1, secureboot / "ms-uefi-ca-2011", False), (0, None, False)]
    for index, ca, expected in cases:
        ca_pem = pem(fresh) if ca is None else ca.with_suffix(".pem").read_bytes()
        ca_der = der(fresh) if ca is None else ca.with_suffix(".der").read_bytes()
        pkcs7 = entries[index]
        assert pkcs7 is not None
        assert _smime_verify(require_tool, tmp_path, pkcs7, ca_pem) is expected
        decision = verify_image(data, as_database([ca_der]))
        if ca is None:
            assert not decision.allowed
        elif expected:
            assert decision.allowed and decision.signature_index == index


@pytest.mark.parametrize("role", ["grub", "kernel"])
def test_debian_signed_stages_match_sbverify_and_openssl(
    role: str, debian_boot_binaries: dict[str, Path], vectors: Path, require_tool: Tool,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = debian_boot_binaries[role]
    (pkcs7,) = [e.pkcs7 for e in PeImage.parse(path.read_bytes()).certificates]
    assert pkcs7 is not None
    for ca, expected in (("debian-secure-boot-ca", True), ("ms-uefi-ca-2011", False)):
        ca_pem = vectors / "secureboot" / f"{ca}.pem"
        sbverify = _run(require_tool("sbverify"), "--cert", ca_pem, path)
        assert (sbverify.returncode == 0) is expected
        assert _smime_verify(require_tool, tmp_path, pkcs7, ca_pem.read_bytes()) is expected
        code = execute(["sb", "verify", str(path), "--db", str(ca_pem)])
        assert (code == 0) is expected
    capsys.readouterr()


def test_cvm_signature_verifies_with_sbverify_and_openssl(
    owner: tuple[Path, Path, bytes], require_tool: Tool, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key, cert, cert_der = owner
    unsigned = tmp_path / "app.efi"
    unsigned.write_bytes(build_pe([SectionSpec(".text", b"\xc3" * 1000, CODE),
                                   SectionSpec(".data", b"cvm" * 99)], trailer=b"tail"))
    signed = tmp_path / "app.signed.efi"
    assert execute(["sb", "sign", str(unsigned), "--key", str(key), "--cert", str(cert),
                    "-o", str(signed)]) == 0
    assert _run(require_tool("sbverify"), "--cert", cert, signed).returncode == 0
    data = signed.read_bytes()
    (pkcs7,) = [e.pkcs7 for e in PeImage.parse(data).certificates]
    assert pkcs7 is not None
    assert _smime_verify(require_tool, tmp_path, pkcs7, cert.read_bytes())
    pesign = _run(require_tool("pesign"), "-h", "-i", signed)
    assert pesign.stdout.split("hash:")[-1].split()[0] == image_digest(data).hex()
    assert execute(["sb", "verify", str(signed), "--db", str(cert)]) == 0
    layout = hashed_layout(PeImage.parse(data))
    start, end = layout.ranges[-1]
    flipped = bytearray(data)
    flipped[(start + end) // 2] ^= 0x01
    (tmp_path / "flipped.efi").write_bytes(bytes(flipped))
    assert _run(require_tool("sbverify"), "--cert", cert, tmp_path / "flipped.efi").returncode
    assert execute(["sb", "verify", str(tmp_path / "flipped.efi"), "--db", str(cert)]) == 1
    assert not verify_image(bytes(flipped), as_database([cert_der])).allowed
    capsys.readouterr()


def test_sbsign_signature_verifies_with_cvm(
    owner: tuple[Path, Path, bytes], require_tool: Tool, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key, cert, cert_der = owner
    unsigned = tmp_path / "app.efi"
    unsigned.write_bytes(build_pe([SectionSpec(".text", b"\x90" * 3000, CODE)]))
    signed = tmp_path / "app.sbsign.efi"
    done = _run(require_tool("sbsign"), "--key", key, "--cert", cert, "--output", signed,
                unsigned)
    assert done.returncode == 0, done.stderr
    assert execute(["sb", "verify", str(signed), "--db", str(cert), "--json"]) == 0
    assert '"allowed": true' in capsys.readouterr().out
    other = issue_certificate("someone else", generate_rsa_key())
    assert not verify_image(signed.read_bytes(), as_database([der(other)])).allowed
    decision = verify_image(signed.read_bytes(), as_database([cert_der]))
    assert decision.allowed and decision.matched is not None
    assert image_digest(signed.read_bytes()) == image_digest(unsigned.read_bytes() + bytes(
        -len(unsigned.read_bytes()) % 8))


def test_authenticated_variable_signature_verifies_with_openssl(
    require_tool: Tool, tmp_path: Path
) -> None:
    from cvm.formats.uefi.efi_time import EfiTime
    from cvm.formats.uefi.guids import EFI_IMAGE_SECURITY_DATABASE
    from cvm.formats.uefi.variable import VariableAuthentication2, signed_bytes
    from cvm.guest.boot.secure_variables import sign_update

    key = generate_rsa_key()
    kek = issue_certificate("cvm test KEK", key)
    time = EfiTime(2025, 2, 3, 4, 5, 6)
    payload = sign_update("db", b"ESL bytes", key, kek, time)
    auth, data = VariableAuthentication2.parse(payload)
    (tmp_path / "auth.p7").write_bytes(auth.pkcs7)
    (tmp_path / "signed.bin").write_bytes(
        signed_bytes("db", EFI_IMAGE_SECURITY_DATABASE, 0x27, time, data))
    (tmp_path / "kek.pem").write_bytes(pem(kek))
    done = _run(require_tool("openssl"), "smime", "-verify", "-inform", "DER",
                "-in", tmp_path / "auth.p7", "-binary", "-content", tmp_path / "signed.bin",
                "-CAfile", tmp_path / "kek.pem", "-purpose", "any", "-partial_chain",
                "-no_check_time", "-out", "/dev/null")
    assert done.returncode == 0, done.stderr
    (tmp_path / "signed.bin").write_bytes(b"x" + (tmp_path / "signed.bin").read_bytes())
    tampered = _run(require_tool("openssl"), "smime", "-verify", "-inform", "DER",
                    "-in", tmp_path / "auth.p7", "-binary", "-content", tmp_path / "signed.bin",
                    "-CAfile", tmp_path / "kek.pem", "-purpose", "any", "-partial_chain",
                    "-no_check_time", "-out", "/dev/null")
    assert tampered.returncode != 0


def test_signed_layout_equals_sbsign(owner: tuple[Path, Path, bytes], require_tool: Tool,
                                     tmp_path: Path) -> None:
    """Same padding, same directory offset, same checksum rule: only the signatures differ."""
    from cvm.crypto.x509_edk2 import load_certificate, load_private_key
    from cvm.image.signing import sign_pe

    key, cert, _ = owner
    unsigned = tmp_path / "app.efi"
    unsigned.write_bytes(build_pe([SectionSpec(".text", b"\x90" * 1001, CODE)], trailer=b"x"))
    theirs = tmp_path / "sbsign.efi"
    assert _run(require_tool("sbsign"), "--key", key, "--cert", cert, "--output", theirs,
                unsigned).returncode == 0
    ours = sign_pe(unsigned.read_bytes(), load_private_key(key.read_bytes()),
                   load_certificate(cert.read_bytes()))
    their_image, our_image = PeImage.parse(theirs.read_bytes()), PeImage.parse(ours)
    assert their_image.certificate_table.virtual_address == (
        our_image.certificate_table.virtual_address)
    assert their_image.optional["check_sum"] == their_image.computed_checksum()
    assert our_image.optional["check_sum"] == our_image.computed_checksum()
    directory = our_image.certificate_directory_offset
    assert directory is not None
    masked = {*range(our_image.checksum_offset, our_image.checksum_offset + 4),
              *range(directory + 4, directory + 8)}
    end = our_image.certificate_table.virtual_address
    assert all(theirs.read_bytes()[i] == ours[i] for i in range(end) if i not in masked)


@pytest.mark.parametrize("pe32", [False, True])
def test_built_images_hash_and_sign_like_the_tools(
    pe32: bool, owner: tuple[Path, Path, bytes], require_tool: Tool, tmp_path: Path
) -> None:
    key, cert, cert_der = owner
    path = tmp_path / "app.efi"
    path.write_bytes(build_pe([SectionSpec(".text", b"\xc3" * 77, CODE),
                               SectionSpec(".data", b"d" * 9)], trailer=b"xyz", pe32=pe32))
    assert PeImage.parse(path.read_bytes()).is_pe32_plus is not pe32
    pesign = _run(require_tool("pesign"), "-h", "-i", path)
    assert pesign.stdout.split("hash:")[-1].split()[0] == image_digest(path.read_bytes()).hex()
    signed = tmp_path / "app.signed.efi"
    assert _run(require_tool("sbsign"), "--key", key, "--cert", cert, "--output", signed,
                path).returncode == 0
    assert verify_image(signed.read_bytes(), as_database([cert_der])).allowed


def test_the_owners_chain_verifies_with_sbverify_under_each_stages_signer_only(
        require_tool: Tool, tmp_path: Path) -> None:
    """Each signed stage of both chains (UKI; shim → GRUB → kernel) verifies with sbverify
    under the certificate of the key that signed it, and not under the owner's other one."""
    import os

    from cvm.image.boot_chain import build_chain
    from cvm.image.keys import OwnerKeys

    keys = OwnerKeys.generate(os.urandom)
    assert keys.vendor is not None
    certificates = {"db": keys.db.certificate, "vendor": keys.vendor.certificate}
    for name, certificate in certificates.items():
        (tmp_path / f"{name}.pem").write_bytes(pem(certificate))
    signed = [stage for chain in ("uki", "shim-grub")
              for stage in build_chain(chain, keys, b"initrd", "uuid", False).stages
              if stage.signer is not None]
    assert [stage.name for stage in signed] == ["uki", "shim", "grub", "kernel"]
    for stage in signed:
        path = tmp_path / f"{stage.name}.efi"
        path.write_bytes(stage.data)
        for name in certificates:
            done = _run(require_tool("sbverify"), "--cert", tmp_path / f"{name}.pem", path)
            assert (done.returncode == 0) is (name == stage.signer), (stage.name, name)
