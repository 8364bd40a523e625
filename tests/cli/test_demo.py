"""``cvm demo`` runs end to end — build, SEV-SNP boot, pictures, attacks — and writes its report."""

from __future__ import annotations

import errno
import io
import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from cvm.cli import demo
from cvm.cli.demo import _print_matrix, demo_image, write_report
from cvm.cli.main import execute
from cvm.hardware.vm import Mode
from cvm.host.adversary.catalog import ATTACKS
from cvm.host.adversary.threat import MODES, Observed, Verdict
from cvm.image.bundle import BuiltImage
from cvm.scenarios.attack_matrix import Result
from cvm.scenarios.memory_views import PageViews
from cvm.scenarios.picture import grey_png


def test_demo_runs_and_every_outcome_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    seeds: list[int | None] = []

    def seen(out: Path, seed: int | None) -> BuiltImage:
        seeds.append(seed)
        return demo_image(out, seed)

    monkeypatch.setattr(demo, "demo_image", seen)
    argv = ["demo", "--out", str(tmp_path), "--seed", "3", "--workers", "1",
            "--family", "registers", "--family", "cpu"]
    assert execute(argv) == 0
    assert seeds == [3]  # the image is built from the demo's seed
    capsys_out = capsys.readouterr().out
    out = " ".join(capsys_out.split())  # the console wraps long lines
    assert "OK: every stage verified" in out  # the SEV-SNP boot's chain of trust
    assert re.search(r"canary scan of everything the host can read \(\d+ MiB.*\): clean", out)
    table = capsys_out.split("observed outcome", 1)[1]
    for name in ("inject-masked-interrupt", "replay-registers", "read-registers"):
        assert re.search(rf"^{name} +\S", table, re.MULTILINE), name  # whole, at 80 columns
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


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_demo_builds_the_same_image_from_the_same_seed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``cvm demo --seed 3`` builds, twice: every file the same, keys included; without
    a seed, other keys and another disk."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first, again = demo_image(tmp_path / "a", 3), demo_image(tmp_path / "b", 3)
    files = _files(first.out)
    assert {"disk.img", "image.json", "owner/pk.key", "owner/db.key", "owner/recovery.key",
            "vtpm-state.bin"} <= set(files)
    assert files == _files(again.out)
    assert first.manifest["seeded"] is True and first.manifest["kdf"]["cost"] == "fast"
    fresh = demo_image(tmp_path / "c", None)
    differ = _files(fresh.out)
    for name in ("owner/pk.key", "owner/db.key", "owner/recovery.key", "disk.img"):
        assert differ[name] != files[name], name
    assert fresh.manifest["seeded"] is False


def test_the_demo_takes_source_date_epoch(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    built = demo_image(tmp_path / "a", 3)
    assert built.keys.pk.certificate.not_valid_before_utc.timestamp() == 1700000000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    assert execute(["demo", "--out", str(tmp_path / "report"), "--seed", "3"]) == 64
    assert not (tmp_path / "report").exists()


def test_demo_refuses_an_unknown_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["demo", "--family", "gpu"]) == 64
    assert "--family" in capsys.readouterr().err


def test_the_matrix_table_cuts_no_name_and_no_word_at_80_columns() -> None:
    """Every outcome the catalogue expects, and one differing cell, on an 80-column console:
    each attack's name whole at the start of its row, each outcome's words whole."""
    results = [Result(attack, mode, Observed(attack.expected(mode).verdict, "as expected",
                                             attack.expected(mode).mechanism), (), True, 0.0)
               for attack in ATTACKS for mode in MODES]
    results[-1] = replace(results[-1], observed=Observed(Verdict.SUCCEEDED, "differs"))
    console = Console(file=io.StringIO(), width=80, color_system=None)
    _print_matrix(console, results)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "…" not in out and max(map(len, out.splitlines())) <= 80
    lines = out.splitlines()
    for attack in ATTACKS:
        assert any(re.match(rf"{re.escape(attack.name)} +\S", line) for line in lines), attack
    words = set(" ".join(out.split("─")[-1].split("\n")).split())
    for result in results:
        for word in str(result.observed).replace("blocked by ", "").split():
            assert word in words, (result.attack.name, word)
    assert "(expected" in words and results[-1].attack.name in out


def test_an_out_that_cannot_hold_the_report_is_refused_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    monkeypatch.setattr(demo, "demo_image", lambda *args: built.append(args))
    (tmp_path / "file").write_bytes(b"")
    assert execute(["demo", "--out", str(tmp_path / "file"), "--family", "cpu"]) == 74
    assert capsys.readouterr().err == f"cvm: error: File exists: {tmp_path / 'file'}\n"
    assert execute(["demo", "--out", str(tmp_path / "file" / "sub")]) == 74
    assert "Not a directory" in capsys.readouterr().err
    monkeypatch.setattr(demo.os, "access", lambda path, mode: mode != os.W_OK | os.X_OK)
    assert execute(["demo", "--out", str(tmp_path / "new" / "folder")]) == 74
    assert capsys.readouterr().err == (
        f"cvm: error: cannot write the report into it: {tmp_path / 'new' / 'folder'}\n")
    assert built == [] and (tmp_path / "new" / "folder").is_dir()
    with pytest.raises(PermissionError) as refused:
        demo.report_folder(tmp_path / "new" / "folder")
    assert refused.value.errno == errno.EACCES


def _views(plain: bytes, snp: bytes) -> list[PageViews]:
    return [PageViews(Mode.PLAIN, 0, 0, plain, plain), PageViews(Mode.SEV, 1, 0, plain, b"s"),
            PageViews(Mode.SEV_SNP, 2, 0, plain, snp)]


def test_the_report_is_its_page_and_the_first_and_last_modes_host_views(
        tmp_path: Path, umask: None) -> None:
    plain, snp = bytes(range(256)) * 16, bytes(255 - b for b in range(256)) * 16
    report = write_report(tmp_path, "<html>page</html>", _views(plain, snp))
    assert report == tmp_path / "report.html"
    assert report.read_text() == "<html>page</html>"
    assert (tmp_path / "plain-host-view.png").read_bytes() == grey_png(plain, 64)
    assert (tmp_path / "sev-snp-host-view.png").read_bytes() == grey_png(snp, 64)
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in tmp_path.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "plain-host-view.png", "report.html", "sev-snp-host-view.png"]


def test_a_report_that_cannot_be_written_leaves_the_previous_one(
        tmp_path: Path, full_disk: Callable[[int], AbstractContextManager[None]]) -> None:
    (tmp_path / "report.html").write_text("previous report")
    page = bytes(4096)
    with full_disk(1000), pytest.raises(OSError) as caught:
        write_report(tmp_path, "x" * 5000, _views(page, page))
    assert caught.value.filename == str(tmp_path / "report.html")
    assert (tmp_path / "report.html").read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no partial file left
