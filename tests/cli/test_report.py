"""``cvm report show`` and ``cvm report verify`` on real and emulated evidence."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cvm.amd import DEFAULT_SEED, Vendor, derive_vcek_private_key
from cvm.attestation.verifier import Evidence
from cvm.cli.main import execute
from cvm.crypto import amd_ecdsa
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.tcb_version import TcbVersion

AT = "2026-06-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def real(vectors: Path) -> dict[str, Path]:
    base = vectors / "snp/virtee-sev/tests/certs_data"
    return {
        "report": base / "report_milan.hex",
        "vcek": base / "vcek_milan.der",
        "chain": base / "cert_chain_milan",
    }


@pytest.fixture(scope="module")
def emulated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vendor = Vendor("Milan", DEFAULT_SEED, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    chip = vendor.manufacture_chip(3)
    tcb = TcbVersion(boot_loader=4, snp=22, microcode=213)
    report = AttestationReport(
        version=3, cpuid_fam_id=0x19, cpuid_mod_id=1, chip_id=chip.chip_id,
        reported_tcb=tcb, current_tcb=tcb, committed_tcb=tcb, launch_tcb=tcb,
        measurement=b"\x11" * 48,
    )
    key = derive_vcek_private_key(chip.chip_secret, tcb, "Milan")
    report = report.with_signature(*amd_ecdsa.sign(key, report.signed_bytes()))
    folder = tmp_path_factory.mktemp("emulated")
    (folder / "report.bin").write_bytes(report.to_bytes())
    (folder / "vcek.der").write_bytes(vendor.vcek_certificate(chip.chip_id, tcb))
    (folder / "ask.der").write_bytes(vendor.ask_certificate)
    (folder / "ark.der").write_bytes(vendor.ark_certificate)
    return folder


def test_show_json(real: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["report", "show", str(real["report"]), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["version"] == 2 and view["measurement"].startswith("7a1e5c26")


def test_show_text(real: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["report", "show", str(real["report"])]) == 0
    assert "microcode=115" in capsys.readouterr().out


def test_verify_real_report_with_amd_roots(
    real: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "verify", str(real["report"]), "--vcek", str(real["vcek"]),
            "--chain", str(real["chain"]), "--at", AT, "--product", "milan"]
    assert execute(args) == 0
    assert "authentic: Milan" in capsys.readouterr().out
    assert execute([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["acceptable"] is True
    assert execute([*args, "--trust", "emulated"]) == 66
    assert execute([*args[:-2], "--product", "genoa"]) == 66


def test_verify_reference_values(real: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["report", "verify", str(real["report"]), "--vcek", str(real["vcek"]),
            "--chain", str(real["chain"]), "--at", AT]
    assert execute([*args, "--measurement", "00" * 48]) == 67
    assert "measurement differs" in capsys.readouterr().err
    assert execute([*args, "--min-tcb", "0x7309000000000003"]) == 67


def test_emulated_needs_explicit_trust(
    emulated_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "verify", str(emulated_dir / "report.bin"), "--certs", str(emulated_dir),
            "--at", AT]
    assert execute(args) == 66
    assert "not among the trusted roots" in capsys.readouterr().err
    assert execute([*args, "--trust", "emulated"]) == 0
    assert "emulated root" in capsys.readouterr().out
    table = emulated_dir / "certs.table"
    table.write_bytes(
        Evidence(
            b"", (emulated_dir / "vcek.der").read_bytes(), (emulated_dir / "ask.der").read_bytes(),
            (emulated_dir / "ark.der").read_bytes(),
        ).cert_table()
    )
    by_table = ["report", "verify", str(emulated_dir / "report.bin"), "--cert-table", str(table),
                "--at", AT, "--trust", "emulated", "--json"]
    assert execute(by_table) == 0
    assert json.loads(capsys.readouterr().out)["trust"] == "emulated"
    assert execute([*by_table, "--certs", str(emulated_dir)]) == 64


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 10)
    assert execute(["report", "show", str(junk)]) == 65
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert execute(["report", "verify", str(junk)]) == 65
    capsys.readouterr()
    report = tmp_path / "r.bin"
    report.write_bytes(bytes(0x4A0))
    assert execute(["report", "verify", str(report)]) in (64, 65)
