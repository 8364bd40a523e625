"""``cvm vm run``: the chain of trust on stdout, the exit status the trace deserves."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.cli.vm import parse_size


def test_a_genuine_run_prints_the_chain_and_exits_0(uki_bundle: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["vm", "run", str(uki_bundle), "--mode", "sev-snp", "--json"]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert trace["ok"] and trace["unsealed"] and trace["workload"]["round_trip"]
    assert trace["pcrs_match_prediction_and_replay"] and trace["launch_accepted"]
    assert {"SVSM", "relying party", "firmware", "kernel stub", "initramfs"} <= {
        step["actor"] for step in trace["steps"]}
    assert execute(["vm", "run", str(uki_bundle), "--mode", "sev"]) == 0
    out = capsys.readouterr().out
    assert "OK: every stage verified" in out and "the host's vTPM" in out


def test_a_refused_boot_exits_with_the_refusals_code(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    bundle = copy_bundle(uki_bundle)
    firmware = bytearray((bundle / "firmware" / "OVMF.fd").read_bytes())
    firmware[0x2000] ^= 0x40
    (bundle / "firmware" / "OVMF.fd").write_bytes(firmware)
    assert execute(["vm", "run", str(bundle)]) == 67  # the relying party refused the report
    captured = capsys.readouterr()
    assert "REFUSED at svsm" in captured.out
    assert captured.err.startswith("cvm: error: svsm: ") and "measurement" in captured.err


def test_usage_errors(tmp_path: Path, uki_bundle: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["vm", "run", str(tmp_path)]) == 64
    assert "not an image bundle" in capsys.readouterr().err
    assert execute(["vm", "run", str(uki_bundle), "--memory", "lots"]) == 64
    assert execute(["vm", "run", str(uki_bundle), "--mode", "tdx"]) == 64
    assert execute(["vm", "run", str(uki_bundle), "--memory", "1M"]) == 64
    assert parse_size("2M") == 2 << 20 and parse_size("1G") == 1 << 30
    assert parse_size("4096") == 4096 and parse_size("64KiB") == 64 << 10


@pytest.mark.parametrize(("memory", "refusal"), [
    ("0", "launch: --memory: at least 2 MiB, in whole pages"),  # 0 is not "the default"
    ("4G", "launch: the host's DRAM is full: "),
])
def test_a_memory_size_the_host_cannot_give_is_refused(
        uki_bundle: Path, memory: str, refusal: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["vm", "run", str(uki_bundle), "--memory", memory]) == 64
    assert capsys.readouterr().err.startswith(f"cvm: error: {refusal}")


@pytest.mark.parametrize(("args", "says"), [
    (["--tpm-state", "tpm"], "--tpm-state: not for --backend emulated"),
    (["--firmware", "OVMF.fd", "--dry-run"], "--firmware, --dry-run: not for --backend emulated"),
    (["--id-key", "id.pem", "--author-key", "author.pem"],
     "--id-key, --author-key: not for --backend emulated"),
    (["--kbs-resource", "other/vtpm/key"], "--kbs-resource: only with --kbs"),
    (["--backend", "qemu", "--memory", "64M"], "--memory: not for --backend qemu --mode plain"),
    (["--backend", "qemu", "--vcpus", "2"], "--vcpus: not for --backend qemu --mode plain"),
    (["--backend", "qemu", "--firmware", "OVMF.fd", "--id-key", "id.pem"],
     "--firmware, --id-key: not for --backend qemu --mode plain"),
    (["--backend", "qemu", "--author-key", "a.pem"],
     "--author-key: not for --backend qemu --mode plain"),
    (["--backend", "qemu", "--kbs-resource", "r/vtpm/t"],
     "--kbs-resource: not for --backend qemu --mode plain"),
    (["--backend", "qemu", "--mode", "sev-snp", "--tpm-state", "tpm"],
     "--tpm-state: not for --backend qemu --mode sev-snp"),
])
def test_an_option_the_backend_does_not_read_is_refused_not_ignored(
        uki_bundle: Path, args: list[str], says: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["vm", "run", str(uki_bundle), *args]) == 64
    assert capsys.readouterr().err == f"cvm: error: {says}\n"
