"""``cvm measure``: output forms and the errors bad input ends in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvm.cli.main import execute


def _amdsev(vectors: Path) -> str:
    folder = vectors / "snp" / "sev-snp-measure" / "tests" / "fixtures"
    return str(folder / "ovmf_AmdSev_suffix.bin")


def test_json_output(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["measure", "--mode", "snp", "--ovmf", _amdsev(vectors), "--vcpus", "4"]
    args += ["--vcpu-type", "EPYC-v4", "--kernel", "/dev/null", "--initrd", "/dev/null"]
    args += ["--append", "", "--guest-features", "0x21", "--json"]
    assert execute(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["measurement"] == (
        "4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78"
        "eafe7b422907be0b4698e2414a631942"
    )
    assert out["vcpus"] == 4 and out["vcpu_signature"] == "0x00800f12"
    assert out["guest_features"] == "0x21" and out["vmm_type"] == "qemu"
    assert out["kernel_hashes"]["kernel"] == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["--mode", "tdx", "--vcpus", "1", "--vcpu-type", "EPYC-v4"], 64),
        (["--mode", "snp", "--vcpu-type", "EPYC-v4"], 64),
        (["--mode", "snp", "--vcpus", "1"], 64),
        (["--mode", "snp", "--vcpus", "1", "--vcpu-type", "Pentium"], 64),
        (["--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC", "--vmm-type", "xen"], 64),
        (["--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC", "--guest-features", "x"], 64),
        (["--mode", "sev", "--append", "quiet"], 64),
        (["--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC", "--snp-ovmf-hash", "zz"], 65),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(
    vectors: Path, capsys: pytest.CaptureFixture[str], extra: list[str], code: int
) -> None:
    assert execute(["measure", "--ovmf", _amdsev(vectors), *extra]) == code
    err = capsys.readouterr().err
    assert err.startswith("cvm: error:") and err.count("\n") == 1


def test_not_an_ovmf_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.fd"
    bad.write_bytes(b"\x00" * 100)
    assert execute(["measure", "--mode", "sev", "--ovmf", str(bad)]) == 65
    assert "OVMF image" in capsys.readouterr().err


def test_dump_vmsa(vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["measure", "--mode", "snp", "--ovmf", _amdsev(vectors), "--vcpus", "2"]
    args += ["--vcpu-type", "EPYC-v4", "--dump-vmsa", str(tmp_path)]
    assert execute(args) == 0
    bsp = vectors / "snp" / "sev-snp-measure" / "vmsa0_qemu_bsp_epycv4_features0x1.bin"
    assert (tmp_path / "vmsa0.bin").read_bytes() == bsp.read_bytes()
    assert (tmp_path / "vmsa1.bin").read_bytes()[0x178:0x180] == (0xB004).to_bytes(8, "little")
