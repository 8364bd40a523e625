"""``cvm demo`` runs end to end — build, SEV-SNP boot, pictures, attacks — and writes its report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cvm.cli.main import execute


def test_demo_runs_and_every_outcome_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["demo", "--out", str(tmp_path), "--seed", "3", "--workers", "1",
            "--family", "registers", "--family", "cpu"]
    assert execute(argv) == 0
    capsys_out = capsys.readouterr().out
    out = " ".join(capsys_out.split())  # the console wraps long lines
    assert "OK: every stage verified" in out  # the SEV-SNP boot's chain of trust
    assert re.search(r"canary scan of everything the host can read \(\d+ MiB.*\): clean", out)
    table = capsys_out.split("observed outcome", 1)[1]
    for name in ("inject-masked-interrupt", "replay-registers", "read-registers"):
        assert re.search(rf"│ {name} +│", table), name  # whole, on an 80-column console
    held = re.search(r"HELD: the SEV-SNP VM booted, opened its root and leaked nothing; "
                     r"(\d+)/(\d+) attack", out)
    assert held is not None and held.group(1) == held.group(2) == str(6 * 4)
    report = (tmp_path / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 8
    assert "class='verdict held'" in report and "seed 3" in report and "cvm 0.1.0" in report
    assert report.count("<td class='held'>") + report.count("<td class='na'>") == 24
    broken = [part[:300] for part in report.split("<td class='broken'>")[1:]]
    assert broken == []
    assert "…" not in report  # no cell is cut short
    assert "EV_EFI_VARIABLE_AUTHORITY" in report  # the chain of trust, in full
    png = (tmp_path / "sev-snp-host-view.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_demo_refuses_an_unknown_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["demo", "--family", "gpu"]) == 64
    assert "--family" in capsys.readouterr().err
