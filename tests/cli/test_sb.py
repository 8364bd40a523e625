"""``cvm sb sign`` / ``cvm sb verify``: exit 0 allowed, 1 refused with the reason, 65 bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.crypto.x509_edk2 import generate_rsa_key, issue_certificate, pem, private_key_pem
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.image import PeImage


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sb")
    paths = {}
    for name in ("owner", "other"):
        key = generate_rsa_key()
        (folder / f"{name}.key").write_bytes(private_key_pem(key))
        (folder / f"{name}.pem").write_bytes(pem(issue_certificate(name, key)))
        paths[name] = folder / f"{name}.pem"
        paths[f"{name}_key"] = folder / f"{name}.key"
    paths["app"] = folder / "app.efi"
    paths["app"].write_bytes(build_pe([SectionSpec(".text", b"\xc3" * 500, CODE)]))
    return paths


def test_sign_then_verify(files: dict[str, Path], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "signed.efi"
    assert execute(["sb", "sign", str(files["app"]), "--key", str(files["owner_key"]),
                    "--cert", str(files["owner"]), "-o", str(out)]) == 0
    assert execute(["sb", "verify", str(out), "--db", str(files["owner"])]) == 0
    assert "allowed" in capsys.readouterr().out
    assert execute(["sb", "verify", str(out), "--db", str(files["other"]), "--json"]) == 1
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["allowed"] is False and document["database"] == "db"
    assert "no matching signer" in captured.err
    assert execute(["sb", "verify", str(out), "--db", str(files["owner"]),
                    "--dbx", str(files["owner"])]) == 1
    captured = capsys.readouterr()
    # the refusal is said once: one error line, nothing on stdout
    assert captured.out == ""
    assert captured.err == (f"cvm: error: {out}: refused (a signing certificate is in dbx; "
                            "database dbx)\n")


def test_append_adds_a_second_signature(files: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    one, two = tmp_path / "one.efi", tmp_path / "two.efi"
    execute(["sb", "sign", str(files["app"]), "--key", str(files["owner_key"]),
             "--cert", str(files["owner"]), "-o", str(one)])
    execute(["sb", "sign", str(one), "--key", str(files["other_key"]),
             "--cert", str(files["other"]), "-o", str(two), "--append"])
    assert len(PeImage.parse(two.read_bytes()).certificates) == 2
    assert execute(["sb", "verify", str(two), "--db", str(files["other"])]) == 0
    capsys.readouterr()


def test_verify_with_a_varstore(files: dict[str, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "vars.fd"
    assert execute(["varstore", "enroll", "--pk", str(files["owner"]), "--kek",
                    str(files["owner"]), "--db", str(files["owner"]), "-o", str(store)]) == 0
    signed = tmp_path / "signed.efi"
    execute(["sb", "sign", str(files["app"]), "--key", str(files["owner_key"]),
             "--cert", str(files["owner"]), "-o", str(signed)])
    assert execute(["sb", "verify", str(signed), "--varstore", str(store)]) == 0
    assert execute(["sb", "verify", str(files["app"]), "--varstore", str(store)]) == 1
    capsys.readouterr()


def test_bad_inputs(files: dict[str, Path], tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"junk")
    assert execute(["sb", "verify", str(files["app"]), "--db", str(junk)]) == 65
    assert execute(["sb", "verify", str(files["app"])]) == 64
    assert execute(["sb", "sign", str(files["app"]), "--key", str(junk), "--cert",
                    str(files["owner"]), "-o", str(tmp_path / "x")]) == 65
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("cvm: error:") == 3


def test_shim_rules_for_the_next_stage(debian_boot_binaries: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    shim, grub = str(debian_boot_binaries["shim"]), str(debian_boot_binaries["grub"])
    kernel = str(debian_boot_binaries["kernel"])
    assert execute(["sb", "verify", grub, "--shim", shim, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["database"] == "MokListRT"
    assert document["variable_vendor"] == "605dab50-e046-4300-abb6-3dd810dd8b23"
    assert execute(["sb", "verify", kernel, "--shim", shim]) == 1
    assert "no .sbat section" in capsys.readouterr().err
    assert execute(["sb", "verify", kernel, "--shim", shim, "--protocol"]) == 0
    level = tmp_path / "sbatlevel"
    level.write_bytes(b"sbat,1,2099010100\ngrub,99\n")
    assert execute(["sb", "verify", grub, "--shim", shim, "--sbat-level", str(level)]) == 1
    assert "revoked SBAT component grub" in capsys.readouterr().err


def test_sign_with_an_intermediate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root_key, mid_key, leaf_key = (generate_rsa_key() for _ in range(3))
    root = issue_certificate("root", root_key)
    mid = issue_certificate("mid", mid_key, (root, root_key))
    leaf = issue_certificate("leaf", leaf_key, (mid, mid_key), ca=False)
    for name, cert in (("root", root), ("mid", mid), ("leaf", leaf)):
        (tmp_path / f"{name}.pem").write_bytes(pem(cert))
    (tmp_path / "leaf.key").write_bytes(private_key_pem(leaf_key))
    app = tmp_path / "app.efi"
    app.write_bytes(build_pe([SectionSpec(".text", b"\xc3" * 10, CODE)]))
    out = tmp_path / "signed.efi"
    assert execute(["sb", "sign", str(app), "--key", str(tmp_path / "leaf.key"), "--cert",
                    str(tmp_path / "leaf.pem"), "--chain", str(tmp_path / "mid.pem"),
                    "-o", str(out)]) == 0
    capsys.readouterr()
    assert execute(["sb", "verify", str(out), "--db", str(tmp_path / "root.pem"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["chain"]) == 3


def test_mutated_signatures_give_only_documented_exit_codes(
    debian_boot_binaries: dict[str, Path], vectors: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes of the real shim's certificate table (and headers) changed at random: allowed,
    refused or malformed, each said on at most one line, never a traceback."""
    shim = debian_boot_binaries["shim"].read_bytes()
    table = PeImage.parse(shim).certificate_table
    ca = str(vectors / "secureboot" / "ms-uefi-ca-2011.der")
    rnd = random.Random(12)
    path = tmp_path / "mutated.efi"
    codes = set()
    for _ in range(80):
        data = bytearray(shim)
        for _ in range(rnd.randint(1, 4)):
            where = (rnd.randrange(table.virtual_address, table.virtual_address + table.size)
                     if rnd.random() < 0.85 else rnd.randrange(0, 0x400))
            data[where] = rnd.randrange(256)
        path.write_bytes(bytes(data))
        code = execute(["sb", "verify", str(path), "--db", ca])
        captured = capsys.readouterr()
        assert code in (0, 1, 65), captured.err
        assert "Traceback" not in captured.err
        assert captured.err.count("\n") == (0 if code == 0 else 1)
        codes.add(code)
    assert {0, 1} <= codes
