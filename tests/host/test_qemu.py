"""The qemu backend's host side: the image it reads, the command lines it composes, the report
it reads back, the exit codes — and the SEV-SNP command line checked against the emulated PSP.
"""

from __future__ import annotations

import base64
import itertools
import json
import shlex
from pathlib import Path

import pytest

from cvm.amd.kds import ChipFuses
from cvm.cli.main import execute
from cvm.errors import CvmError, ExternalToolError, FormatError, StatusError, UsageError
from cvm.formats.ovmf.image import OvmfImage
from cvm.formats.snp.id_auth import IdAuthInfo
from cvm.formats.snp.id_block import IdBlock
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.launch import DEFAULT_POLICY, SnpLaunchConfig, launch_snp
from cvm.host.qemu import (
    MANIFEST,
    SCHEMA,
    BootReport,
    QemuImage,
    parse_snp_argv,
    profile_args,
    qemu_argv,
    read_report,
)
from cvm.host.vmm import Hypervisor
from cvm.image.firmware import vcpu_config
from cvm.image.measurement import SevMode, launch_digest

SNP_FIRMWARE = Path("/usr/share/ovmf/OVMF.fd")
PROFILE_ARGS = "-machine q35 -drive file=DISK,format=raw,if=virtio -nic none"


def _image(folder: Path, **changes: object) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "disk.img").write_bytes(bytes(512))
    (folder / "OVMF_VARS.fd").write_bytes(bytes(512))
    manifest: dict[str, object] = {
        "schema": SCHEMA, "disk": "disk.img", "varstore": "OVMF_VARS.fd",
        "firmware": "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "qemu_args": PROFILE_ARGS,
        "profile": "q35", **changes,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_the_image_loads(tmp_path: Path) -> None:
    image = QemuImage.load(_image(tmp_path / "img"))
    assert image.disk == (tmp_path / "img" / "disk.img").resolve()
    assert image.profile == "q35" and image.qemu_args == PROFILE_ARGS
    assert image.varstore == (tmp_path / "img" / "OVMF_VARS.fd").resolve()
    assert image.firmware == Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
    assert image.folder == tmp_path / "img"


@pytest.mark.parametrize(("changes", "error", "words"), [
    ({"schema": "cvm-qemu-image/0"}, FormatError, "schema"),
    ({"disk": "../disk.img"}, FormatError, "outside the image"),
    ({"varstore": "owner/root.key"}, FormatError, "outside the image"),
    ({"disk": 3}, FormatError, "disk is missing"),
    ({"qemu_args": "-machine q35"}, FormatError, "DISK"),
    ({"profile": ""}, FormatError, "profile"),
])
def test_the_image_is_read_strictly(tmp_path: Path, changes: dict[str, object],
                                    error: type[CvmError], words: str) -> None:
    with pytest.raises(error, match=words):
        QemuImage.load(_image(tmp_path / "img", **changes))


def test_a_folder_without_a_manifest_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a qemu image"):
        QemuImage.load(tmp_path)
    (tmp_path / MANIFEST).write_text("{")
    with pytest.raises(FormatError, match="not JSON"):
        QemuImage.load(tmp_path)


def test_the_command_line_is_q35_tcg_secure_boot_swtpm_and_the_profile(tmp_path: Path) -> None:
    image = QemuImage.load(_image(tmp_path / "img"))
    argv = qemu_argv(image, Path("/p/vars.fd"), Path("/p/tpm.sock"), Path("/p/serial"))
    line = shlex.join(argv)
    assert argv[argv.index("-machine") + 1] == "q35,smm=on,accel=tcg"
    assert argv.count("-machine") == 1  # the profile's "-machine q35" is folded in
    assert "driver=cfi.pflash01,property=secure,value=on" in argv
    assert f"if=pflash,format=raw,unit=0,file={image.firmware},readonly=on" in argv
    assert "if=pflash,format=raw,unit=1,file=/p/vars.fd" in argv
    assert "socket,id=chrtpm,path=/p/tpm.sock" in argv and "tpm-tis,tpmdev=tpm0" in argv
    assert f"file={image.disk},format=raw,if=virtio" in line and "-nic none" in line
    assert "file:/p/serial" in argv and "-no-reboot" in argv


def test_profile_args_keep_other_machines() -> None:
    assert profile_args("-machine pc -drive file=DISK", Path("/d")) == [
        "-machine", "pc", "-drive", "file=/d"]


SERIAL_OPENED = """OVMF noise
CVM-PCR sha256 4 ABCDEF
CVM-PCR sha256 7 0123
CVM-ROOT-OPENED CVM-WORKLOAD: data
CVM-DONE
"""


def test_the_report_is_read_from_the_serial_console() -> None:
    report = read_report(SERIAL_OPENED)
    assert (report.outcome, report.detail) == ("opened", "CVM-WORKLOAD: data")
    assert report.pcrs == {4: "abcdef", 7: "0123"} and report.serial == SERIAL_OPENED
    refused = read_report("CVM-UNSEAL-FAILED ERROR: Esys_Unseal(0x99D) policy\nCVM-DONE\n")
    assert refused.outcome == "refused" and "0x99D" in refused.detail
    assert read_report("CVM-OPEN-FAILED\nCVM-DONE\n").outcome == "open-failed"


def test_a_report_without_its_end_is_incomplete() -> None:
    text = SERIAL_OPENED.replace("CVM-DONE", "Kernel panic")
    report = read_report(text)
    assert report.outcome == "incomplete" and report.serial == text
    assert report.detail == ("CVM-PCR sha256 7 0123 | CVM-ROOT-OPENED CVM-WORKLOAD: data | "
                             "Kernel panic")
    assert report.pcrs == {4: "abcdef", 7: "0123"}
    assert read_report("").detail == "nothing on the serial console"


@pytest.mark.parametrize(("outcome", "detail", "code"), [
    ("opened", "CVM-WORKLOAD", 0),
    ("refused", "ERROR: Esys_Unseal(0x99D) - tpm:session(1):a policy check failed", 68),
    ("open-failed", "", 1),
    ("incomplete", "Kernel panic", 70),
])
def test_the_exit_code_follows_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    outcome: str, detail: str, code: int,
) -> None:
    from cvm.cli import vm_qemu

    monkeypatch.setattr(vm_qemu, "run_image",
                        lambda image, state: BootReport(outcome, detail, {4: "00"}, ""))
    image = _image(tmp_path / "img")
    assert execute(["vm", "run", str(image), "--backend", "qemu", "--tpm-state",
                    str(tmp_path)]) == code
    err = capsys.readouterr().err
    if outcome == "refused":
        assert "refused to unseal" in err and "0x99D" in err
    assert ("Traceback" in err) is False


def test_the_refusal_carries_the_tpm_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cvm.cli import vm_qemu

    monkeypatch.setattr(vm_qemu, "run_image", lambda image, state: BootReport(
        "refused", "Esys_Unseal(0x128) lockout", {}, ""))
    with pytest.raises(StatusError) as caught:
        vm_qemu.run_qemu(_image(tmp_path / "img"), "plain", 1, tmp_path, None, None, None,
                         False, False)
    assert caught.value.code == 0x128


def test_run_needs_the_tpm_and_a_known_mode(tmp_path: Path) -> None:
    image = str(_image(tmp_path / "img"))
    assert execute(["vm", "run", image, "--backend", "qemu"]) == 64
    assert execute(["vm", "run", image, "--backend", "qemu", "--mode", "sev-es"]) == 64
    assert execute(["vm", "run", image, "--backend", "kvm"]) == 64


def test_a_tpm_state_that_is_not_one_is_refused(tmp_path: Path) -> None:
    from cvm.host.qemu import run_image

    with pytest.raises(UsageError, match="not a TPM state"):
        run_image(QemuImage.load(_image(tmp_path / "img")), tmp_path)


# --- SEV-SNP: the command line, its ID block and ID auth against the emulated PSP -----------

@pytest.fixture(scope="module")
def snp_line(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    if not SNP_FIRMWARE.exists():
        pytest.fail("Debian's OVMF (package ovmf) is missing")
    image = _image(tmp_path_factory.mktemp("snp") / "img")
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert execute(["vm", "run", str(image), "--backend", "qemu", "--mode", "sev-snp",
                        "--firmware", str(SNP_FIRMWARE), "--vcpus", "2", "--dry-run"]) == 0
    return shlex.split(printed.getvalue())


def _launch(id_block: bytes, id_auth: bytes) -> bytes:
    machine = Machine(8 << 30)
    psp = SecureProcessor(machine, ChipFuses("Milan", b"\x01" * 64, b"\x02" * 64))
    config = SnpLaunchConfig(vcpus=2, vcpu_signature=0x00A00F11, id_block=id_block,
                             id_auth=id_auth)
    return launch_snp(Hypervisor(machine), psp, SNP_FIRMWARE.read_bytes(), config).measurement


def test_the_snp_command_line_is_what_an_snp_host_runs(snp_line: list[str]) -> None:
    machine = snp_line[snp_line.index("-machine") + 1]
    assert machine.startswith("q35,confidential-guest-support=sev0,memory-backend=ram1")
    objects = [v for f, v in itertools.pairwise(snp_line) if f == "-object"]
    assert any(o.startswith("memory-backend-memfd,id=ram1,") for o in objects)
    props = parse_snp_argv(snp_line)
    assert props["id"] == "sev0" and props["cbitpos"] == "51"
    assert props["reduced-phys-bits"] == "1" and props["author-key-enabled"] == "on"
    assert int(props["policy"], 16) == DEFAULT_POLICY
    assert snp_line[snp_line.index("-bios") + 1] == str(SNP_FIRMWARE)
    assert "pflash" not in " ".join(snp_line)  # an SNP guest has no pflash


def test_its_id_block_names_the_predicted_launch_digest_and_the_psp_accepts_it(
    snp_line: list[str],
) -> None:
    props = parse_snp_argv(snp_line)
    block = base64.b64decode(props["id-block"])
    auth = base64.b64decode(props["id-auth"])
    predicted = launch_digest(SevMode.SNP, OvmfImage.parse(SNP_FIRMWARE.read_bytes()),
                              vcpu_config(2, "EPYC-Milan"))
    assert IdBlock.from_bytes(block).ld == predicted
    assert IdAuthInfo.from_bytes(auth).author_key is not None
    assert _launch(block, auth) == predicted


@pytest.mark.parametrize(("what", "offset"), [
    ("id-block", 0), ("id-block", 0x58), ("id-auth", 0x40), ("id-auth", 0x680),
])
def test_one_byte_changed_and_the_psp_refuses(snp_line: list[str], what: str,
                                             offset: int) -> None:
    props = parse_snp_argv(snp_line)
    data = {name: bytearray(base64.b64decode(props[name])) for name in ("id-block", "id-auth")}
    data[what][offset] ^= 0x01
    with pytest.raises(StatusError):
        _launch(bytes(data["id-block"]), bytes(data["id-auth"]))


def test_without_snp_hardware_it_does_not_run(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    if Path("/dev/sev").exists():
        pytest.skip("not applicable: this machine has SEV hardware")
    image = _image(tmp_path / "img")
    assert execute(["vm", "run", str(image), "--backend", "qemu", "--mode", "sev-snp",
                    "--firmware", str(SNP_FIRMWARE)]) == ExternalToolError.exit_code
    assert "no SEV-SNP hardware" in capsys.readouterr().err


def test_a_command_line_without_the_snp_object_is_refused() -> None:
    with pytest.raises(FormatError, match="no -object sev-snp-guest"):
        parse_snp_argv(["qemu", "-object", "memory-backend-memfd,id=ram1"])
    with pytest.raises(FormatError, match="not key=value"):
        parse_snp_argv(["qemu", "-object", "sev-snp-guest,id"])
