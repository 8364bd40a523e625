"""`cvm image build|show`: outputs and documented exit codes, one line on stderr per error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvm.cli.main import COMMANDS, execute
from cvm.crypto.x509_edk2 import der, load_certificate, pem, private_key_pem
from cvm.image.bundle import BuiltImage


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cvm: error:") and "Traceback" not in err
    return err


def test_image_is_a_registered_command() -> None:
    assert COMMANDS["image"][0] == "cvm.cli.image"


def test_build_json_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "img"
    assert execute(["image", "build", str(out), "--chain", "shim-grub", "--mode", "sev-snp",
                    "--kdf-cost", "fast", "--seed", "5", "--vcpus", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["manifest"]["chain"] == "shim-grub"
    assert report["manifest"]["kdf"]["recovery_keyslot"]["type"] == "pbkdf2"
    assert report["manifest"]["tokens"][0]["pcrs"] == [4, 7, 8, 9]
    assert set(report["launch"]) == {"sev-snp"} and report["total_s"] > 0
    assert execute(["image", "show", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["launch"] == report["launch"]
    assert execute(["image", "show", str(out)]) == 0
    assert "sev-snp" in capsys.readouterr().out


def test_build_with_the_owners_signing_key(tmp_path: Path, built_images: dict[str, BuiltImage],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    db = built_images["uki"].keys.db
    key, cert = tmp_path / "db.key", tmp_path / "db.crt"
    key.write_bytes(private_key_pem(db.key))
    cert.write_bytes(pem(db.certificate))
    out = tmp_path / "img"
    assert execute(["image", "build", str(out), "--sb-key", str(key), "--sb-cert", str(cert),
                    "--kdf-cost", "fast"]) == 0
    assert "signed by db" in capsys.readouterr().out
    assert (out / "owner/db.crt").read_bytes() == pem(db.certificate)
    assert der(db.certificate) in (out / "firmware/OVMF_VARS.fd").read_bytes()
    assert der(db.certificate) in (out / "disk.img").read_bytes()[: 64 << 20]


@pytest.mark.parametrize(("args", "code", "says"), [
    (["--chain", "grub"], 64, "--chain"),
    (["--mode", "tdx"], 64, "--mode"),
    (["--chain", "shim-grub", "--seal", "signed"], 64, "--seal"),
    (["--seal", "maybe"], 64, "--seal"),
    (["--kdf-cost", "free"], 64, "--kdf-cost"),
    (["--vcpus", "0"], 64, "--vcpus"),
    (["--sb-key", "/nonexistent/db.key"], 64, "--sb-cert"),
])
def test_bad_options_exit_64(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             args: list[str], code: int, says: str) -> None:
    assert execute(["image", "build", str(tmp_path / "img"), *args]) == code
    assert says in _one_line_error(capsys)


def test_an_existing_bundle_is_kept_unless_forced(
        built_images: dict[str, BuiltImage], capsys: pytest.CaptureFixture[str]) -> None:
    out = built_images["uki"].out
    assert execute(["image", "build", str(out)]) == 64
    assert "--force" in _one_line_error(capsys)


def test_show_refuses_malformed_bundles(tmp_path: Path, built_images: dict[str, BuiltImage],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["image", "show", str(tmp_path / "none")]) == 64
    _one_line_error(capsys)
    broken = tmp_path / "broken"
    broken.mkdir()
    source = built_images["uki"].out
    (broken / "image.json").write_bytes((source / "image.json").read_bytes())
    document = json.loads((source / "reference-values.json").read_text())
    document["launch"][0]["digest"] = "00"
    (broken / "reference-values.json").write_text(json.dumps(document))
    assert execute(["image", "show", str(broken)]) == 65
    assert "launch[0].digest" in _one_line_error(capsys)
    (broken / "image.json").write_text("{}")
    assert execute(["image", "show", str(broken)]) == 65
    _one_line_error(capsys)


def test_reuse_the_owners_keys_a_kernel_and_a_dbx(
        tmp_path: Path, built_images: dict[str, BuiltImage],
        capsys: pytest.CaptureFixture[str]) -> None:
    from cvm.image.boot_chain import make_kernel

    source = built_images["shim-grub"]
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(make_kernel("6.12.0-owner"))
    revoked = "ab" * 32
    out = tmp_path / "img"
    assert execute(["image", "build", str(out), "--chain", "shim-grub", "--keys",
                    str(source.out / "owner"), "--kernel", str(kernel), "--dbx", revoked,
                    "--kdf-cost", "fast", "--json"]) == 0
    capsys.readouterr()
    assert (out / "owner/db.crt").read_bytes() == (source.out / "owner/db.crt").read_bytes()
    assert (out / "owner/provisioning.key").read_bytes() == (
        source.out / "owner/provisioning.key").read_bytes()
    assert bytes.fromhex(revoked) in (out / "firmware/OVMF_VARS.fd").read_bytes()
    assert b"6.12.0-owner" in (out / "disk.img").read_bytes()[: 64 << 20]


@pytest.mark.parametrize(("args", "code", "says"), [
    (["--dbx", "abcd"], 64, "--dbx"),
    (["--kernel", "/nonexistent/vmlinuz"], 74, "/nonexistent/vmlinuz"),  # the OS error
    (["--keys", "/nonexistent/owner"], 64, "owner keys"),
])
def test_bad_overrides_exit_with_their_code(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            args: list[str], code: int, says: str) -> None:
    assert execute(["image", "build", str(tmp_path / "img"), *args]) == code
    assert says in _one_line_error(capsys)


def test_a_kernel_that_is_not_pe_exits_65(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"not a PE image")
    assert execute(["image", "build", str(tmp_path / "img"), "--kernel", str(kernel)]) == 65
    _one_line_error(capsys)


@pytest.mark.parametrize(("args", "says"), [
    (["--srk-public", "srk.pub"], "--srk-public: not for --target emulated"),
    (["--profile", "q35"], "--profile: not for --target emulated"),
    (["--cache", "cache"], "--cache: not for --target emulated"),
    (["--target", "qemu", "--mode", "sev"], "--mode: not for --target qemu"),
    (["--target", "qemu", "--seal", "pcrs"], "--seal: not for --target qemu"),
    (["--target", "qemu", "--sb-key", "k", "--sb-cert", "c"],
     "--sb-key, --sb-cert: not for --target qemu"),
    (["--target", "qemu", "--keys", "owner"], "--keys: not for --target qemu"),
    (["--target", "qemu", "--kernel", "vmlinuz"], "--kernel: not for --target qemu"),
    (["--target", "qemu", "--dbx", "00" * 32], "--dbx: not for --target qemu"),
    (["--target", "qemu", "--vcpus", "2", "--seed", "1"], "--vcpus: not for --target qemu"),
    (["--target", "qemu", "--vcpu-type", "EPYC-Rome"], "--vcpu-type: not for --target qemu"),
    (["--target", "qemu", "--kdf-cost", "fast"], "--kdf-cost: not for --target qemu"),
])
def test_an_option_of_the_other_target_is_refused_not_ignored(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str) -> None:
    assert execute(["image", "build", str(tmp_path / "img"), *args]) == 64
    assert _one_line_error(capsys) == f"cvm: error: {says}\n"
    assert not (tmp_path / "img").exists()


@pytest.mark.parametrize("bad", ["--sb-key", "--sb-cert"])
def test_a_signing_key_or_certificate_that_does_not_parse_names_its_file(
        tmp_path: Path, built_images: dict[str, BuiltImage],
        capsys: pytest.CaptureFixture[str], bad: str) -> None:
    owner = built_images["uki"].out / "owner"
    files = {"--sb-key": owner / "db.key", "--sb-cert": owner / "db.crt"}
    files[bad] = tmp_path / "junk.pem"
    files[bad].write_text("junk\n")
    assert execute(["image", "build", str(tmp_path / "img"), "--sb-key", str(files["--sb-key"]),
                    "--sb-cert", str(files["--sb-cert"])]) == 65
    assert _one_line_error(capsys).startswith(f"cvm: error: {bad} {files[bad]}: ")


def test_a_seeded_build_warns_and_says_so_in_its_manifest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    out = tmp_path / "img"
    assert execute(["image", "build", str(out), "--kdf-cost", "fast", "--seed", "5",
                    "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["manifest"]["seeded"] is True
    assert captured.err == ("warning: a seeded image (--seed): its owner keys, recovery "
                            "passphrase and disk key follow from the seed — for tests and "
                            "demos, never for real data\n")
    assert execute(["image", "show", str(out)]) == 0
    assert ("  seeded (--seed): its keys and disk secrets follow from the seed — for tests and "
            "demos, never for real data\n") in capsys.readouterr().out
    assert execute(["image", "build", str(tmp_path / "plain"), "--kdf-cost", "fast"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "built " in captured.out
    assert execute(["image", "show", str(tmp_path / "plain")]) == 0
    assert "seeded (--seed)" not in capsys.readouterr().out


def test_source_date_epoch_stamps_the_keys_and_a_bad_one_exits_64(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert execute(["image", "build", str(tmp_path / "img"), "--kdf-cost", "fast", "--seed",
                    "5"]) == 0
    capsys.readouterr()
    certificate = load_certificate((tmp_path / "img/owner/pk.crt").read_bytes())
    assert certificate.not_valid_before_utc.timestamp() == 1700000000
    for bad, says in (("yesterday", "'yesterday' is not a whole number"),
                      ("100", "100 is outside 1980-01-01..2107-12-31")):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", bad)
        assert execute(["image", "build", str(tmp_path / bad), "--seed", "5"]) == 64
        error = _one_line_error(capsys)
        assert error.startswith("cvm: error: SOURCE_DATE_EPOCH: ") and says in error
        assert not (tmp_path / bad).exists()
