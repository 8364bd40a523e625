"""What ``cvm attack run|matrix`` and ``cvm demo`` conclude, on made-up cells: exit 1 exactly
when an outcome differs, a secret leaked where the mode must protect it, or the demo's boot
failed or leaked; the attacks and modes chosen; every line and JSON field of the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from cvm.cli import attack, demo, demo_verdict
from cvm.errors import UsageError
from cvm.hardware.vm import Mode
from cvm.host.adversary.canary import Leak
from cvm.host.adversary.catalog import ATTACKS
from cvm.host.adversary.threat import MODES, Family, Observed, Verdict
from cvm.scenarios.attack_matrix import Result
from cvm.scenarios.memory_views import PageViews

LEAK = Leak("vmpck", 8, "DRAM", 0x1000)


def _cell(index: int = 0, mode: Mode = Mode.SEV_SNP, *, differs: bool = False,
          leaks: tuple[Leak, ...] = (), must_be_clean: bool = True) -> Result:
    chosen = ATTACKS[index]
    expected = chosen.expected(mode)
    observed = (Observed(Verdict.SUCCEEDED, "it went through") if differs else
                Observed(expected.verdict, "as expected", expected.mechanism))
    return Result(chosen, mode, observed, leaks, must_be_clean, 0.123456)


def test_every_cell_held_exits_0_and_any_other_1() -> None:
    assert attack.exit_code([]) == 0 and attack.exit_code([_cell(), _cell(1)]) == 0
    assert attack.exit_code([_cell(), _cell(1, differs=True)]) == 1
    assert attack.exit_code([_cell(leaks=(LEAK,)), _cell(1)]) == 1
    assert attack.exit_code([_cell(leaks=(LEAK,), must_be_clean=False)]) == 0


def test_the_report_raises_exit_1_after_printing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as stop:
        attack._report([_cell(differs=True)], False)
    assert stop.value.exit_code == 1
    assert capsys.readouterr().out.endswith("0/1 outcomes as expected\n")
    attack._report([_cell()], True)
    printed = capsys.readouterr().out
    assert json.loads(printed)["held"] == 1 and printed.startswith('{\n  "held": 1,\n')


def test_each_cell_is_told_held_or_broken_with_its_leaks() -> None:
    other_leak = Leak("disk key", 0, "disk", 0x20)
    held, broken = _cell(), _cell(1, Mode.PLAIN, differs=True, leaks=(LEAK, other_leak))
    name, other = ATTACKS[0].name, ATTACKS[1].name
    assert attack.report_lines([held, broken]) == [
        f"held   {name} [sev-snp]: expected {held.expected}, observed {held.observed} — "
        "as expected",
        f"BROKEN {other} [plain]: expected {broken.expected}, observed succeeded — it went "
        f"through; 2 leak(s), first {LEAK}",
        "1/2 outcomes as expected"]


def test_the_json_report_has_every_field() -> None:
    cell = _cell(leaks=(LEAK,) * 12)
    expected = cell.expected
    assert attack.report_json([cell, _cell(1)])["held"] == 1
    document = attack.report_json([cell])
    assert (document["held"], document["total"]) == (0, 1)
    assert document["results"] == [{
        "attack": cell.attack.name, "family": cell.attack.family.value, "mode": "sev-snp",
        "expected": {"verdict": expected.verdict.value,
                     "mechanism": expected.mechanism.value if expected.mechanism else None,
                     "why": expected.why or None},
        "observed": {"verdict": cell.observed.verdict.value,
                     "mechanism": (cell.observed.mechanism.value if cell.observed.mechanism
                                   else None),
                     "detail": "as expected"},
        "as_expected": True, "leak_count": 12, "leaks": [str(LEAK)] * 10,
        "scan_must_be_clean": True, "held": False, "seconds": 0.1235}]


def test_an_expectation_without_mechanism_or_reason_is_null_in_json() -> None:
    plain = next(a for a in ATTACKS if a.expected(Mode.PLAIN).mechanism is None
                 and a.expected(Mode.PLAIN).why)
    snp = next(a for a in ATTACKS if a.expected(Mode.SEV_SNP).mechanism is not None
               and not a.expected(Mode.SEV_SNP).why)
    assert attack._expected_json(plain.expected(Mode.PLAIN))["mechanism"] is None
    assert attack._expected_json(plain.expected(Mode.PLAIN))["why"] == plain.expected(
        Mode.PLAIN).why
    assert attack._expected_json(snp.expected(Mode.SEV_SNP))["why"] is None
    cell = _cell(differs=True)
    assert attack._result_json(cell)["observed"]["mechanism"] is None


def test_the_modes_are_those_named_else_all_four() -> None:
    assert attack._modes(None) == list(MODES) and attack._modes([]) == list(MODES)
    assert attack._modes(["sev-snp", "plain"]) == [Mode.SEV_SNP, Mode.PLAIN]


def test_the_attacks_are_those_of_the_families_named_else_all() -> None:
    assert attack.chosen_attacks(None) == list(ATTACKS) == attack.chosen_attacks([])
    chosen = attack.chosen_attacks(["registers", "cpu"])
    assert chosen == [a for a in ATTACKS if a.family in (Family("registers"), Family("cpu"))]
    assert chosen and len(chosen) < len(ATTACKS)
    with pytest.raises(UsageError) as refused:
        attack.chosen_attacks(["registers", "gpu"])
    assert str(refused.value) == ("unknown family 'gpu' (choose from "
                                  f"{', '.join(f.value for f in Family)})")


def test_the_demo_chooses_attacks_the_same_way() -> None:
    assert demo_verdict.chosen_attacks(None) == list(ATTACKS)
    memory = [a for a in ATTACKS if a.family is Family("memory")]
    assert demo_verdict.chosen_attacks(["memory"]) == memory
    with pytest.raises(UsageError) as refused:
        demo_verdict.chosen_attacks(["memory", "gpu", "tpu"])
    assert str(refused.value) == (f"--family: 'gpu' is not one of "
                                  f"{', '.join(f.value for f in Family)}")


def test_the_demos_boot_held_only_when_its_trace_passed_and_nothing_leaked() -> None:
    assert demo_verdict.boot_held(True, []) is True
    assert demo_verdict.boot_held(False, []) is False
    assert demo_verdict.boot_held(True, [LEAK]) is False


def test_the_demo_exits_1_when_the_boot_or_any_outcome_failed() -> None:
    cells = [_cell(), _cell(1)]
    assert demo_verdict.exit_code(True, cells) == 0 and demo_verdict.all_held(True, cells)
    assert demo_verdict.exit_code(False, cells) == 1 and not demo_verdict.all_held(False, cells)
    assert demo_verdict.exit_code(True, [*cells, _cell(2, differs=True)]) == 1
    assert demo_verdict.exit_code(True, [_cell(leaks=(LEAK,))]) == 1


def test_the_demos_verdict_line() -> None:
    cells = [_cell(0, mode) for mode in MODES]
    assert demo_verdict.verdict_line(True, cells, 10.26) == (
        "HELD: the SEV-SNP VM booted, opened its root and leaked nothing; 4/4 attack outcomes "
        "as the architecture promises (1 attacks × 4 modes) in 10.3 s")
    assert demo_verdict.verdict_line(False, cells, 1.0).startswith(
        "BROKEN: the SEV-SNP VM FAILED; 4/4 attack outcomes")
    cells[-1] = _cell(0, MODES[-1], differs=True)
    assert demo_verdict.verdict_line(True, cells, 1.0).startswith(
        "BROKEN: the SEV-SNP VM booted, opened its root and leaked nothing; 3/4 attack")


def test_the_scan_line_says_clean_or_the_first_leak() -> None:
    assert demo_verdict.scan_line([], 5 << 20) == (
        "canary scan of everything the host can read (5 MiB: DRAM, exits, disk, state file, "
        "logs): clean")
    assert demo_verdict.scan_line([LEAK, Leak("disk key", 0, "disk", 0)], 3 << 20).endswith(
        f"logs): [red]2 leak(s), first {LEAK}[/red]")


def test_the_demos_files_are_replaced_whole(tmp_path: Path) -> None:
    for name in ("report.html", "plain-host-view.png", "sev-snp-host-view.png"):
        (tmp_path / name).write_bytes(b"old")
    page = bytes(4096)
    views = [PageViews(Mode.PLAIN, 0, 0, page, page), PageViews(Mode.SEV_SNP, 1, 0, page, page)]
    demo.write_report(tmp_path, "new", views)
    assert (tmp_path / "report.html").read_bytes() == b"new"
    assert (tmp_path / "plain-host-view.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "plain-host-view.png", "report.html", "sev-snp-host-view.png"]


def test_only_printable_bytes_are_shown_as_text() -> None:
    assert demo._printable(b"ab \x1f\x7f~\x00") == "ab ..~."


class FakeTrace:
    def __init__(self, run: object | None) -> None:
        self.run = run

    def secrets(self) -> dict[str, bytes]:
        return {"disk key": b"0123456789abcdef"}


def test_the_demo_scans_everything_the_host_can_read(monkeypatch: pytest.MonkeyPatch) -> None:
    views = {"DRAM": b"\x00" * 100 + b"456789ab" + b"\x00" * 20, "disk": b"\x11" * 72}
    seen: list[object] = []

    def host_view(run: object) -> dict[str, bytes]:
        seen.append(run)
        return views

    monkeypatch.setattr(demo_verdict, "host_view", host_view)
    leaks, scanned = demo_verdict.scan(FakeTrace("the run"))  # type: ignore[arg-type]
    assert seen == ["the run"] and scanned == 128 + 72
    assert [(leak.secret, leak.where, leak.offset) for leak in leaks] == [
        ("disk key", "DRAM", 100)]
    assert demo_verdict.scan(FakeTrace(None)) == ([], 0)  # type: ignore[arg-type]


def test_the_demos_matrix_runs_the_attacks_given_and_counts_each_cell(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    calls: list[tuple[object, dict[str, object]]] = []

    def matrix(attacks: object, **options: object) -> list[Result]:
        calls.append((attacks, options))
        progress = options["progress"]
        assert callable(progress)
        for mode in MODES:
            progress(ATTACKS[0], mode)
        return [_cell()]

    monkeypatch.setattr("cvm.scenarios.attack_matrix.matrix", matrix)
    console = Console(file=io.StringIO(), width=80)
    assert demo._matrix(console, [ATTACKS[0]], 7, 3) == [_cell()]
    (attacks, options), = calls
    assert attacks == [ATTACKS[0]] and options["seed"] == 7 and options["workers"] == 3
