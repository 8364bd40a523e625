"""``cvm report show`` and ``cvm report verify`` on real and emulated evidence."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cvm.amd import derive_vcek_private_key
from cvm.amd.root_store import RootStore
from cvm.attestation.verifier import Evidence
from cvm.cli.main import execute
from cvm.crypto import amd_ecdsa
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.guest_policy import GuestPolicy
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
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An XDG_DATA_HOME whose default workspace holds an emulated Milan root."""
    home = tmp_path_factory.mktemp("xdg-data")
    RootStore.for_workspace("default", {"XDG_DATA_HOME": str(home)}).root("Milan", create=True)
    return home


@pytest.fixture(autouse=True)
def isolated_data_home(
    data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))


def _write_evidence(folder: Path, data_home: Path, **fields: object) -> Path:
    store = RootStore.for_workspace("default", {"XDG_DATA_HOME": str(data_home)})
    vendor = store.vendor("Milan", clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    chip = vendor.manufacture_chip(3)
    tcb = TcbVersion(boot_loader=4, snp=22, microcode=213)
    values: dict[str, object] = {
        "version": 3, "cpuid_fam_id": 0x19, "cpuid_mod_id": 1, "chip_id": chip.chip_id,
        "reported_tcb": tcb, "current_tcb": tcb, "committed_tcb": tcb, "launch_tcb": tcb,
        "measurement": b"\x11" * 48, **fields,
    }
    report = AttestationReport(**values)  # type: ignore[arg-type]
    key = derive_vcek_private_key(chip.chip_secret, tcb, "Milan")
    report = report.with_signature(*amd_ecdsa.sign(key, report.signed_bytes()))
    folder.mkdir(exist_ok=True)
    (folder / "report.bin").write_bytes(report.to_bytes())
    (folder / "vcek.der").write_bytes(vendor.vcek_certificate(chip.chip_id, tcb))
    (folder / "ask.der").write_bytes(vendor.ask_certificate)
    (folder / "ark.der").write_bytes(vendor.ark_certificate)
    return folder


@pytest.fixture(scope="module")
def emulated_dir(tmp_path_factory: pytest.TempPathFactory, data_home: Path) -> Path:
    return _write_evidence(tmp_path_factory.mktemp("emulated"), data_home)


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


def _verify_args(folder: Path) -> list[str]:
    return ["report", "verify", str(folder / "report.bin"), "--certs", str(folder), "--at", AT,
            "--trust", "emulated"]


def test_debug_and_migration_agent_guests_are_refused_by_default(
    tmp_path: Path, data_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    debug = _verify_args(_write_evidence(tmp_path / "debug", data_home,
                                         policy=GuestPolicy(debug=True)))
    assert execute(debug) == 67
    assert "policy.debug" in capsys.readouterr().err
    assert execute([*debug, "--allow-debug"]) == 0
    assert execute([*debug, "--allow-migration-agent"]) == 67
    capsys.readouterr()
    agent = _verify_args(_write_evidence(tmp_path / "agent", data_home,
                                         policy=GuestPolicy(migrate_ma=True)))
    assert execute(agent) == 67
    assert "policy.migrate_ma" in capsys.readouterr().err
    assert execute([*agent, "--allow-debug"]) == 67
    assert execute([*agent, "--allow-migration-agent"]) == 0
    capsys.readouterr()
    assert execute([*agent, "--refuse-debug"]) == 64
    assert "--refuse-debug is gone" in capsys.readouterr().err


def test_what_was_not_checked_is_said(
    emulated_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _verify_args(emulated_dir)
    assert execute(args) == 0
    out = capsys.readouterr().out
    assert "not checked (no reference value given): MEASUREMENT, REPORT_DATA, HOST_DATA, " \
           "minimum TCB, ID key digest" in out
    checked = [*args, "--measurement", "11" * 48, "--report-data", "00" * 64, "--host-data",
               "00" * 32, "--min-tcb", "0xd516000000000004", "--vmpl", "0", "--id-key-digest",
               "00" * 48, "--author-key-digest", "00" * 48, "--family-id", "00" * 16,
               "--image-id", "00" * 16, "--min-guest-svn", "0"]
    assert execute([*checked, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["not_checked"] == [
        "CHIP_ID", "minimum firmware version",
    ]
    assert execute(checked) == 0
    out = capsys.readouterr().out
    assert "MEASUREMENT" not in out and "not checked (no reference value given): CHIP_ID" in out
    assert execute([*checked, "--report-data", "01" * 64]) == 67
    assert "report_data differs" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value", "why"), [
    ("--measurement", "00", "1 bytes of hex, the field has 48"),
    ("--measurement", "00" * 49, "49 bytes of hex, the field has 48"),
    ("--report-data", "00" * 63, "the field has 64"),
    ("--host-data", "zz", "not hex"),
    ("--chip-id", "00" * 8, "the field has 64"),
    ("--vmpl", "-1", "not a VMPL"),
    ("--vmpl", "4", "not a VMPL"),
    ("--min-tcb", "-1", "not a 64-bit"),
    ("--min-tcb", str(1 << 64), "not a 64-bit"),
    ("--min-tcb", "x", "not an integer"),
    ("--min-guest-svn", "-1", "not a 32-bit"),
    ("--min-guest-svn", str(1 << 32), "not a 32-bit"),
])
def test_reference_values_of_the_wrong_size_are_usage_errors(
    emulated_dir: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, why: str
) -> None:
    assert execute([*_verify_args(emulated_dir), option, value]) == 64
    err = capsys.readouterr().err
    assert why in err and err.count("\n") == 1


def test_a_running_tcb_below_the_reported_one_is_refused(
    tmp_path: Path, data_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    older = TcbVersion(boot_loader=4, snp=21, microcode=213)
    args = _verify_args(_write_evidence(tmp_path / "below", data_home, current_tcb=older))
    assert execute([*args, "--json"]) == 67
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert [f["claim"] for f in findings] == ["current_tcb_vs_reported_tcb"]


def test_each_workspace_has_its_own_root(
    emulated_dir: Path, data_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = [*_verify_args(emulated_dir), "--workspace", "other"]
    assert execute(other) == 69
    assert "emulated-root" in capsys.readouterr().err
    assert execute(["report", "emulated-root", "--workspace", "other", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["directory"] == str(data_home / "cvm" / "emulated-amd" / "other")
    assert [root["product"] for root in made["roots"]] == ["Milan"]
    assert execute(other) == 66
    assert "not among the trusted roots" in capsys.readouterr().err
    assert execute(["report", "emulated-root", "--workspace", "other"]) == 0
    assert made["roots"][0]["ark_sha256"] in capsys.readouterr().out  # made once, kept
    assert execute(["report", "emulated-root", "--workspace", "../x"]) == 64
    assert execute(["report", "emulated-root", "--product", "Naples"]) == 64
