"""``cvm demo`` runs end to end and writes its report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cvm.cli.main import execute


def test_demo_runs_and_every_outcome_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert execute(["demo", "--out", str(tmp_path), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    held = re.search(r"(\d+)/(\d+) outcomes as the architecture promises", out)
    assert held is not None and held.group(1) == held.group(2) and int(held.group(2)) >= 50
    report = (tmp_path / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 8
    png = (tmp_path / "sev-snp-host-view.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
