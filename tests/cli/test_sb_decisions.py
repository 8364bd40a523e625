"""``cvm sb verify``, one decision at a time: shim's options only with ``--shim``, db and dbx
from the files and the varstore each where they belong, a firmware decision only with a db, a
refusal as one line and exit 1, what an allowed image prints."""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cvm.cli import sb
from cvm.cli.main import execute
from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate, pem
from cvm.errors import CvmError, FormatError, UsageError
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.image.boot_chain import make_grub, make_shim
from cvm.image.keys import OwnerKeys
from cvm.image.signing import sign_pe
from cvm.wire import Guid

APP = build_pe([SectionSpec(".text", b"\xc3" * 300, CODE)])


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sb")
    keys = OwnerKeys.generate(random.Random(5).randbytes, vendor=False, pcr_policy=False)
    signed = keys.sign_db(APP)
    other_key = generate_rsa_key()
    other = issue_certificate("other", other_key)
    paths = {"db": folder / "db.pem", "other": folder / "other.pem", "app": folder / "app.efi",
             "signed": folder / "signed.efi", "vars": folder / "vars.fd",
             "other_signed": folder / "other-signed.efi"}
    paths["db"].write_bytes(pem(keys.db.certificate))
    paths["other"].write_bytes(pem(other))
    paths["app"].write_bytes(APP)
    paths["signed"].write_bytes(signed)
    paths["other_signed"].write_bytes(sign_pe(APP, other_key, other))
    digest = hashlib.sha256(b"revoked").digest()
    paths["vars"].write_bytes(keys.varstore([digest]).to_bytes())
    return paths


@pytest.mark.parametrize(("options", "says"), [
    (["--mok", "m.pem"], "--mok"), (["--sbat-level", "level"], "--sbat-level"),
    (["--protocol"], "--protocol"),
    (["--protocol", "--mok", "m.pem"], "--mok, --protocol"),
])
def test_shims_options_without_shim_are_refused_not_ignored(
        owner: dict[str, Path], options: list[str], says: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["sb", "verify", str(owner["signed"]), "--db", str(owner["db"]),
                    *options]) == 64
    assert capsys.readouterr().err == (
        f"cvm: error: {says}: not for a firmware decision (without --shim)\n")


def test_shims_options_are_taken_with_shim(tmp_path: Path) -> None:
    sb.shim_options_unused(tmp_path, [tmp_path], tmp_path, True)
    sb.shim_options_unused(None, [], None, False)


def test_db_and_dbx_take_the_files_and_the_varstores_own(owner: dict[str, Path]) -> None:
    allow, deny = sb.databases([owner["other"]], [], owner["vars"])
    assert [entry.data for entry in allow.certificates()] == [
        der(sb.load_certificate(owner["other"].read_bytes())),
        der(sb.load_certificate(owner["db"].read_bytes()))]
    assert [entry.data for entry in deny.sha256_hashes()] == [hashlib.sha256(b"revoked").digest()]
    assert len(deny) == 1
    allow, deny = sb.databases([], [owner["other"]], None)
    assert len(allow) == 0 and len(deny) == 1


def test_the_varstores_db_allows_and_a_dbx_file_refuses(owner: dict[str, Path]) -> None:
    allow, deny = sb.databases([], [], owner["vars"])
    decision = sb.decide(owner["signed"], allow, deny, varstore_given=True, shim=None, mok=[],
                         sbat_level=None, protocol=False)
    assert decision.allowed and decision.database == "db"
    allow, deny = sb.databases([], [owner["db"]], owner["vars"])
    decision = sb.decide(owner["signed"], allow, deny, varstore_given=True, shim=None, mok=[],
                         sbat_level=None, protocol=False)
    assert not decision.allowed and decision.database == "dbx"


def test_a_firmware_decision_needs_a_db(owner: dict[str, Path]) -> None:
    allow, deny = sb.databases([], [owner["db"]], None)
    with pytest.raises(UsageError) as refused:
        sb.decide(owner["signed"], allow, deny, varstore_given=False, shim=None, mok=[],
                  sbat_level=None, protocol=False)
    assert str(refused.value) == "give db entries with --db (or a varstore with --varstore)"
    decision = sb.decide(owner["signed"], allow, deny, varstore_given=True, shim=None, mok=[],
                         sbat_level=None, protocol=False)
    assert not decision.allowed and decision.image == str(owner["signed"])


def test_only_the_db_given_allows(owner: dict[str, Path]) -> None:
    allow, deny = sb.databases([owner["db"]], [], None)
    for image, allowed in (("signed", True), ("other_signed", False), ("app", False)):
        decision = sb.decide(owner[image], allow, deny, varstore_given=False, shim=None,
                             mok=[], sbat_level=None, protocol=False)
        assert decision.allowed is allowed


def test_a_refusal_is_an_error_of_exit_1_naming_why(owner: dict[str, Path]) -> None:
    allow, deny = sb.databases([owner["db"]], [owner["db"]], None)
    decision = sb.decide(owner["signed"], allow, deny, varstore_given=False, shim=None,
                         mok=[], sbat_level=None, protocol=False)
    with pytest.raises(CvmError) as refused:
        sb.refuse(decision)
    assert type(refused.value) is CvmError and refused.value.exit_code == 1
    assert str(refused.value) == str(decision) == (
        f"{owner['signed']}: refused (a signing certificate is in dbx; database dbx)")
    allow, deny = sb.databases([owner["db"]], [], None)
    sb.refuse(sb.decide(owner["signed"], allow, deny, varstore_given=False, shim=None, mok=[],
                        sbat_level=None, protocol=False))


def test_an_allowed_image_prints_the_decision_and_the_entry(owner: dict[str, Path]) -> None:
    allow, deny = sb.databases([owner["db"]], [], None)
    decision = sb.decide(owner["signed"], allow, deny, varstore_given=False, shim=None,
                         mok=[], sbat_level=None, protocol=False)
    assert decision.matched is not None
    assert sb.allowed_lines(decision) == [
        str(decision), f"matched entry: owner {decision.matched.owner}, "
                       f"{len(decision.matched.data)} bytes"]


def test_the_command_prints_json_then_refuses(owner: dict[str, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["sb", "verify", str(owner["app"]), "--db", str(owner["db"]), "--json"]) == 1
    captured = capsys.readouterr()
    assert '"allowed": false' in captured.out and captured.err.count("\n") == 1
    assert execute(["sb", "verify", str(owner["signed"]), "--db", str(owner["db"])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{owner['signed']}: allowed (") and out[1].startswith(
        "matched entry: owner ")


def test_shim_decides_with_its_mok_list_sbat_level_and_protocol(
        owner: dict[str, Path], tmp_path: Path) -> None:
    """A shim built with a vendor certificate (cvm's own, unsigned): GRUB signed by the vendor
    passes; an image without .sbat only through the shim_lock protocol; a revoked SBAT
    generation refused; an image signed by another key only with that key in MokList."""
    vendor_key = generate_rsa_key()
    vendor = issue_certificate("vendor", vendor_key)
    shim = tmp_path / "shimx64.efi"
    shim.write_bytes(make_shim(der(vendor)))
    grub, kernel = tmp_path / "grubx64.efi", tmp_path / "vmlinuz"
    grub.write_bytes(sign_pe(make_grub(), vendor_key, vendor))
    kernel.write_bytes(sign_pe(APP, vendor_key, vendor))
    allow, deny = sb.databases([], [], None)

    def decide(image: Path, **given: object) -> Any:
        options: dict[str, Any] = {"varstore_given": False, "shim": shim, "mok": [],
                                   "sbat_level": None, "protocol": False, **given}
        return sb.decide(image, allow, deny, **options)

    allowed = decide(grub)
    assert allowed.allowed and allowed.image == str(grub)
    assert not decide(kernel).allowed and decide(kernel, protocol=True).allowed
    level = tmp_path / "sbatlevel"
    level.write_bytes(b"sbat,1,2099010100\ngrub,99\n")
    revoked = decide(grub, sbat_level=level)
    assert not revoked.allowed and "revoked SBAT component grub" in revoked.reason
    assert not decide(owner["signed"], protocol=True).allowed
    by_mok = decide(owner["signed"], protocol=True, mok=[owner["db"]])
    assert by_mok.allowed and by_mok.database == "MokListRT"


def test_a_database_file_is_a_certificate_or_signature_lists_each_added(
        owner: dict[str, Path], tmp_path: Path) -> None:
    from cvm.formats.uefi.guids import EFI_CERT_SHA256
    from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList

    owner_guid = Guid.parse("11111111-2222-3333-4444-555555555555")
    for name, digest in (("one.esl", b"\x01" * 32), ("two.esl", b"\x02" * 32)):
        esl = SignatureList.of(EFI_CERT_SHA256, owner_guid, digest)
        (tmp_path / name).write_bytes(SignatureDatabase((esl,)).to_bytes())
    database = sb.read_database([tmp_path / "one.esl", owner["db"], tmp_path / "two.esl"])
    assert [e.data for e in database.sha256_hashes()] == [b"\x01" * 32, b"\x02" * 32]
    assert len(database.certificates()) == 1 and len(database) == 3
    (tmp_path / "junk").write_bytes(b"junk")
    with pytest.raises(FormatError) as refused:
        sb.read_database([owner["db"], tmp_path / "junk"])
    assert str(refused.value) == (f"{tmp_path / 'junk'}: neither an X.509 certificate nor EFI "
                                  "signature lists")


def test_only_the_security_databases_db_and_dbx_are_taken_from_a_varstore(
        owner: dict[str, Path], tmp_path: Path) -> None:
    from cvm.formats.uefi.guids import EFI_GLOBAL_VARIABLE
    from cvm.formats.uefi.variable import SECURE_BOOT_ATTRIBUTES, EfiVariable
    from cvm.formats.uefi.varstore import Varstore

    store = Varstore.parse(owner["vars"].read_bytes())
    db = store.get("db")
    assert db is not None
    moved = store.with_variables([v for v in store.variables if v.name != "db"])
    moved = moved.set(EfiVariable("db", EFI_GLOBAL_VARIABLE, SECURE_BOOT_ATTRIBUTES, db.data))
    (tmp_path / "vars.fd").write_bytes(moved.to_bytes())
    allow, deny = sb.databases([], [], tmp_path / "vars.fd")
    assert len(allow) == 0 and len(deny) == 1


def test_the_json_decision_names_the_entry_and_the_chain(owner: dict[str, Path]) -> None:
    allow, deny = sb.databases([owner["db"]], [], None)
    decision = sb.decide(owner["signed"], allow, deny, varstore_given=False, shim=None,
                         mok=[], sbat_level=None, protocol=False)
    matched = decision.matched
    assert matched is not None and decision.chain
    assert sb.decision_json(decision) == {
        "image": str(owner["signed"]), "allowed": True, "reason": decision.reason,
        "database": "db", "variable_vendor": str(decision.variable_vendor),
        "authenticode_sha256": decision.image_digest.hex(),
        "signature_index": decision.signature_index,
        "matched": {"signature_type": "EFI_CERT_X509", "owner": str(matched.owner),
                    "data_sha256": hashlib.sha256(matched.data).hexdigest(),
                    "size": len(matched.data)},
        "chain": [hashlib.sha256(c).hexdigest() for c in decision.chain]}
    refused = sb.decide(owner["app"], allow, deny, varstore_given=False, shim=None, mok=[],
                        sbat_level=None, protocol=False)
    assert sb.decision_json(refused)["matched"] is None
    assert sb.decision_json(replace(decision, signature_type=None))["matched"][
        "signature_type"] is None
    unnamed = replace(decision, signature_type=Guid.parse("99999999-2222-3333-4444-555555555555"))
    assert sb.decision_json(unnamed)["matched"]["signature_type"] == ""
