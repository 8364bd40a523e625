"""``cvm pe hash`` and ``cvm pe show``: digests, sections, signatures, SBAT, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe

SBAT = b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"


@pytest.fixture()
def app_file(tmp_path: Path) -> Path:
    path = tmp_path / "app.efi"
    path.write_bytes(build_pe([SectionSpec(".text", b"\xc3" * 99, CODE),
                               SectionSpec(".sbat", SBAT)], trailer=b"abc"))
    return path


def test_hash_variants(app_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = app_file.read_bytes()
    assert execute(["pe", "hash", str(app_file)]) == 0
    assert capsys.readouterr().out.split()[0] == image_digest(data).hex()
    assert execute(["pe", "hash", str(app_file), "--variant", "shim", "--alg", "sha1"]) == 0
    assert capsys.readouterr().out.split()[0] == image_digest(data, "sha1", "shim").hex()


def test_show_json(app_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["pe", "show", str(app_file), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in document["sections"]] == [".text", ".sbat"]
    assert document["signatures"] == []
    assert document["sbat"][0].startswith("sbat,1,")


def test_show_debian_shim(debian_boot_binaries: dict[str, Path],
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["pe", "show", str(debian_boot_binaries["shim"])]) == 0
    out = capsys.readouterr().out
    assert "signatures: 2" in out
    assert "Microsoft Corporation UEFI CA 2011" in out and "Microsoft UEFI CA 2023" in out
    assert "sbatlevel previous:" in out and "DOES NOT MATCH" not in out


@pytest.mark.parametrize("content", [b"", b"not a PE file", b"MZ" + bytes(100)])
def test_bad_input_is_one_line_exit_65(tmp_path: Path, content: bytes,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.efi"
    path.write_bytes(content)
    for verb in ("hash", "show"):
        assert execute(["pe", verb, str(path)]) == 65
        err = capsys.readouterr().err
        assert err.startswith("cvm: error:") and err.count("\n") == 1


def test_unknown_algorithm_is_usage(app_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["pe", "hash", str(app_file), "--alg", "md5"]) == 64
    assert "md5" in capsys.readouterr().err
