"""``cvm vm run --backend qemu``, one decision at a time: the owner's ID and author keys and the
firmware given are the ones the SEV-SNP command line carries, with the vCPUs and the CPU model;
it runs only where ``/dev/sev`` is; the plain dry run; each outcome's exit code and line."""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from tests.host.test_qemu import _image

from cvm.cli import vm_qemu
from cvm.cli.main import execute
from cvm.crypto import amd_ecdsa
from cvm.errors import ExternalToolError, StatusError, UsageError
from cvm.formats.snp.id_auth import IdAuthInfo, SnpPublicKey
from cvm.host.qemu import BootReport, QemuImage, parse_snp_argv, qemu_argv

SNP_FIRMWARE = Path("/usr/share/ovmf/OVMF.fd")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return _image(tmp_path / "img")


def _pem(key: amd_ecdsa.PrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _public(key: amd_ecdsa.PrivateKey) -> SnpPublicKey:
    return SnpPublicKey(*amd_ecdsa.public_key_coordinates(key.public_key()))


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SNP_FIRMWARE.exists():
        pytest.fail("Debian's OVMF (package ovmf) is missing")
    copy = tmp_path_factory.mktemp("fw") / "my-OVMF.fd"
    copy.write_bytes(SNP_FIRMWARE.read_bytes())
    return copy


def test_the_id_and_author_keys_given_sign_the_firmware_given(
        image: Path, firmware: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    id_key, author_key = amd_ecdsa.generate_private_key(), amd_ecdsa.generate_private_key()
    assert execute(["vm", "run", str(image), "--backend", "qemu", "--mode", "sev-snp",
                    "--firmware", str(firmware), "--vcpus", "3", "--dry-run", "--id-key",
                    str(_pem(id_key, tmp_path / "id.pem")), "--author-key",
                    str(_pem(author_key, tmp_path / "author.pem"))]) == 0
    argv = shlex.split(capsys.readouterr().out)
    auth = IdAuthInfo.from_bytes(base64.b64decode(parse_snp_argv(argv)["id-auth"]))
    assert auth.id_key == _public(id_key) and auth.author_key == _public(author_key)
    assert argv[argv.index("-bios") + 1] == str(firmware)
    assert argv[argv.index("-smp") + 1] == "3" and argv[argv.index("-cpu") + 1] == "EPYC-Milan"


def test_a_key_or_firmware_that_cannot_be_read_is_named(image: Path, tmp_path: Path) -> None:
    loaded = QemuImage.load(image)
    with pytest.raises(UsageError) as refused:
        vm_qemu.snp_command(loaded, tmp_path / "none.fd", 1, None, None)
    assert str(refused.value) == f"--firmware: cannot read {tmp_path / 'none.fd'}"
    if not SNP_FIRMWARE.exists():
        pytest.fail("Debian's OVMF (package ovmf) is missing")
    for given, option in (({"id_key": tmp_path / "none"}, "--id-key"),
                          ({"author_key": tmp_path / "none"}, "--author-key")):
        options: dict[str, Any] = {"id_key": None, "author_key": None, **given}
        with pytest.raises(UsageError) as refused:
            vm_qemu.snp_command(loaded, SNP_FIRMWARE, 1, **options)
        assert str(refused.value) == f"{option}: cannot read {tmp_path / 'none'}"


def test_sev_snp_runs_only_where_the_hardware_is(
        image: Path, firmware: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[int, str, list[str]]] = []

    def spawn(mode: int, program: str, argv: list[str]) -> int:
        ran.append((mode, program, argv))
        return 9

    monkeypatch.setattr(vm_qemu.os, "spawnvp", spawn)
    monkeypatch.setattr(vm_qemu, "SEV_DEVICE", tmp_path / "sev")
    with pytest.raises(ExternalToolError) as refused:
        vm_qemu.run_qemu(image, "sev-snp", 1, None, firmware, None, None, False, False)
    assert str(refused.value) == (f"no SEV-SNP hardware here ({tmp_path / 'sev'} is missing); "
                                  "--dry-run prints the command line")
    (tmp_path / "sev").write_bytes(b"")
    assert vm_qemu.run_qemu(image, "sev-snp", 1, None, firmware, None, None, False, False) == 9
    (mode, program, argv), = ran
    assert mode == vm_qemu.os.P_WAIT and program == argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-bios") + 1] == str(firmware)


def test_the_plain_dry_run_prints_the_command_line_with_placeholders(
        image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vm_qemu.run_qemu(image, "plain", 1, None, None, None, None, True, False) == 0
    expected = qemu_argv(QemuImage.load(image), Path("VARS.fd"), Path("SWTPM.sock"),
                         Path("SERIAL.log"))
    assert capsys.readouterr().out == shlex.join(expected) + "\n"
    assert "VARS.fd" in " ".join(expected) and "SWTPM.sock" in " ".join(expected)


def test_another_mode_or_no_tpm_is_refused(image: Path) -> None:
    with pytest.raises(UsageError) as refused:
        vm_qemu.run_qemu(image, "sev-es", 1, None, None, None, None, False, False)
    assert str(refused.value) == "--mode 'sev-es': the qemu backend runs plain or sev-snp"
    with pytest.raises(UsageError) as refused:
        vm_qemu.run_qemu(image, "plain", 1, None, None, None, None, False, False)
    assert str(refused.value) == ("give --tpm-state DIR: the TPM the image was sealed to "
                                  "(cvm vm tpm-setup DIR makes one)")


def _boot(monkeypatch: pytest.MonkeyPatch, report: BootReport) -> list[tuple[Any, Path]]:
    calls: list[tuple[Any, Path]] = []

    def run_image(image: Any, state: Path) -> BootReport:
        calls.append((image, state))
        return report

    monkeypatch.setattr(vm_qemu, "run_image", run_image)
    return calls


def test_the_boot_runs_on_the_tpm_given_and_prints_its_pcrs(
        image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    calls = _boot(monkeypatch, BootReport("opened", "CVM-WORKLOAD", {7: "aa", 14: "bb"}, ""))
    assert vm_qemu.run_qemu(image, "plain", 1, tmp_path, None, None, None, False, False) == 0
    (loaded, state), = calls
    assert loaded == QemuImage.load(image) and state == tmp_path
    assert capsys.readouterr().out.splitlines() == [
        f"{image}: opened: CVM-WORKLOAD", "  PCR  7 sha256 aa", "  PCR 14 sha256 bb"]
    assert vm_qemu.run_qemu(image, "plain", 1, tmp_path, None, None, None, False, True) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == {"outcome": "opened", "detail": "CVM-WORKLOAD",
                                   "pcrs_sha256": {"7": "aa", "14": "bb"}}
    assert printed.startswith('{\n "outcome": ')


@pytest.mark.parametrize(("detail", "code"), [
    ("Esys_Unseal(0x9A2) - tpm:session(1)", 0x9A2), ("Esys_Unseal(0x128)", 0x128),
    ("Esys_Unseal failed", 0x99D)])
def test_a_refusal_carries_the_tpms_code_else_policy_fail(
        image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, detail: str,
        code: int) -> None:
    _boot(monkeypatch, BootReport("refused", detail, {}, ""))
    with pytest.raises(StatusError) as refused:
        vm_qemu.run_qemu(image, "plain", 1, tmp_path, None, None, None, False, False)
    assert refused.value.code == code
    assert str(refused.value) == f"the TPM refused to unseal the root's key: {detail}"


def test_an_unopened_root_is_1_and_an_unfinished_boot_70(
        image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _boot(monkeypatch, BootReport("open-failed", "", {}, ""))
    assert vm_qemu.run_qemu(image, "plain", 1, tmp_path, None, None, None, False, False) == 1
    assert capsys.readouterr().err == (
        "cvm: error: the key was unsealed but the root did not open\n")
    _boot(monkeypatch, BootReport("incomplete", "Kernel panic", {}, ""))
    with pytest.raises(ExternalToolError) as stopped:
        vm_qemu.run_qemu(image, "plain", 1, tmp_path, None, None, None, False, False)
    assert str(stopped.value) == "the boot did not finish: Kernel panic"
