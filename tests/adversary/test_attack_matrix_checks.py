"""The attack matrix's verdict per cell, one rule at a time: a cell holds only when the observed
verdict AND mechanism equal the expectation and, where the mode must protect the guest's
secrets, the canary scan found nothing. Results are built directly (and the booted VM faked
where the rule is about plumbing), so each test names the one rule it guards."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from cvm.errors import StateError
from cvm.hardware.vm import Mode
from cvm.host.adversary.canary import Leak
from cvm.host.adversary.catalog import ATTACKS, by_name
from cvm.host.adversary.threat import (
    MODES,
    Attack,
    Family,
    Mechanism,
    Observed,
    Verdict,
    ok,
)
from cvm.scenarios import attack_matrix
from cvm.scenarios.attack_matrix import Result, cell_held, must_be_clean

LEAK = Leak("volume key", 0, "DRAM", 0x1000)
RUNTIME = {Family.MEMORY, Family.REGISTERS, Family.CPU, Family.LAUNCH, Family.EVIDENCE}


def _blocked_in_snp() -> Attack:
    attack = by_name("remap-page")
    assert attack.expected(Mode.SEV_SNP).mechanism is Mechanism.RMP
    return attack


def _result(observed: Observed, leaks: tuple[Leak, ...] = (), clean: bool = True) -> Result:
    return Result(_blocked_in_snp(), Mode.SEV_SNP, observed, leaks, clean, 0.0)


EXPECTED = Observed(Verdict.BLOCKED, "the RMP refused", Mechanism.RMP)


def test_the_expected_outcome_with_a_clean_scan_holds() -> None:
    result = _result(EXPECTED)
    assert result.as_expected and result.scan_clean and result.held and cell_held(result)


@pytest.mark.parametrize("observed", [
    Observed(Verdict.BLOCKED, "wrong mechanism", Mechanism.MEMORY_ENCRYPTION),
    Observed(Verdict.BLOCKED, "no mechanism"),
    Observed(Verdict.SUCCEEDED, "the host read the page"),
    Observed(Verdict.NOT_APPLICABLE, "did not run"),
])
def test_a_differing_verdict_or_mechanism_breaks_the_cell(observed: Observed) -> None:
    for leaks, clean in (((), True), ((), False), ((LEAK,), False)):
        result = _result(observed, leaks, clean)
        assert not result.as_expected and not result.held, (observed, leaks, clean)


def test_a_leak_where_the_mode_must_protect_breaks_an_expected_cell() -> None:
    result = _result(EXPECTED, (LEAK,), True)
    assert result.as_expected and not result.scan_clean and not result.held


def test_a_leak_where_the_mode_need_not_protect_is_reported_but_holds() -> None:
    result = _result(EXPECTED, (LEAK,), False)
    assert result.as_expected and not result.scan_clean and result.held


def test_the_expectation_is_the_cells_own_mode() -> None:
    """remap-page succeeds under SEV and is blocked by the RMP under SEV-SNP: the same
    observation holds in one mode and breaks in the other."""
    attack = _blocked_in_snp()
    succeeded = Observed(Verdict.SUCCEEDED, "remapped")
    assert attack.expected(Mode.SEV).verdict is Verdict.SUCCEEDED
    assert Result(attack, Mode.SEV, succeeded, (), False, 0.0).held
    assert not Result(attack, Mode.SEV_SNP, succeeded, (), True, 0.0).held
    assert Result(attack, Mode.SEV, succeeded, (), False, 0.0).expected == attack.sev


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", list(Family))
def test_where_the_scan_must_be_clean(mode: Mode, family: Family) -> None:
    """Always under SEV-SNP; under SEV-ES for the attacks on the running VM only; never under
    SEV or a plain VM (their memory or registers are the host's to read)."""
    want = mode is Mode.SEV_SNP or (mode is Mode.SEV_ES and family in RUNTIME)
    assert must_be_clean(mode, family) is want
    assert set(attack_matrix.RUNTIME_FAMILIES) == RUNTIME


def test_cell_randomness_is_reproducible_and_distinct_per_cell() -> None:
    read, remap = by_name("read-page"), by_name("remap-page")
    assert attack_matrix.cell_random(None, read, Mode.SEV) is os.urandom
    assert attack_matrix.boot_random(None, Mode.SEV) is os.urandom
    cell = attack_matrix.cell_random(7, read, Mode.SEV)
    assert cell(32) == attack_matrix.cell_random(7, read, Mode.SEV)(32)
    others = {attack_matrix.cell_random(8, read, Mode.SEV)(32),
              attack_matrix.cell_random(7, remap, Mode.SEV)(32),
              attack_matrix.cell_random(7, read, Mode.SEV_SNP)(32),
              attack_matrix.boot_random(7, Mode.SEV)(32)}
    assert len(others | {attack_matrix.cell_random(7, read, Mode.SEV)(32)}) == 5
    boot = attack_matrix.boot_random(7, Mode.SEV)
    assert boot(32) == attack_matrix.boot_random(7, Mode.SEV)(32)
    assert boot(32) != attack_matrix.boot_random(7, Mode.SEV_ES)(32)


def test_attacks_that_boot_again_are_scheduled_first() -> None:
    costs = {attack.family: attack_matrix._cost(attack) for attack in ATTACKS}
    assert costs == {family: int(family in (Family.BOOT_FILES, Family.STATE))
                     for family in Family}


# --- the plumbing around one cell, with a fake booted VM ------------------------------------


@dataclass
class FakeView:
    leaks: list[Leak]
    scans: list[tuple[tuple[str, ...], object]] = field(default_factory=list)

    def scan(self, scan: Any, files: object) -> list[Leak]:
        self.scans.append((scan.names, files))
        return list(self.leaks)


@dataclass
class FakeLab:
    mode: Mode
    bundles: Any = None
    random_bytes: Any = None
    workdir: Path | None = None
    secrets: dict[str, bytes] = field(default_factory=lambda: {"volume key": b"K" * 32})
    leaks: list[Leak] = field(default_factory=list)
    closed: int = 0
    homes: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.view = FakeView(self.leaks)

    def known_secrets(self) -> dict[str, bytes]:
        return dict(self.secrets)

    def host_files(self) -> str:
        return "the host's files"

    def close(self) -> None:
        self.closed += 1

    def rehome(self, workdir: Path) -> None:
        self.homes.append(workdir)


def _attack(observed: Observed, family: Family = Family.MEMORY) -> Attack:
    return replace(_blocked_in_snp(), family=family, perform=lambda lab: observed)


def test_a_cell_scans_every_secret_in_everything_the_host_can_read() -> None:
    lab = FakeLab(Mode.SEV_SNP, leaks=[LEAK])
    attacked: list[object] = []
    attack = replace(_attack(EXPECTED), perform=lambda lab: attacked.append(lab) or EXPECTED)
    result = attack_matrix.attack_booted(attack, lab, 0.0)  # type: ignore[arg-type]
    assert attacked == [lab] and lab.view.scans == [(("volume key",), "the host's files")]
    assert result.leaks == (LEAK,) and result.must_be_clean and not result.held
    assert result.mode is Mode.SEV_SNP and result.observed is EXPECTED
    assert result.seconds > 0.0


def test_a_cell_asks_the_scan_for_its_modes_rule() -> None:
    lab = FakeLab(Mode.SEV_ES, leaks=[LEAK])
    attack = replace(_attack(Observed(Verdict.SUCCEEDED, "read")), family=Family.STATE,
                     sev_es=ok("the host holds the key"))
    result = attack_matrix.attack_booted(attack, lab)  # type: ignore[arg-type]
    assert not result.must_be_clean and result.held and result.leaks == (LEAK,)
    assert 0.0 <= result.seconds < 60.0


def test_a_cell_under_sev_es_must_be_clean_for_a_runtime_attack() -> None:
    result = attack_matrix.attack_booted(_attack(EXPECTED), FakeLab(Mode.SEV_ES))  # type: ignore[arg-type]
    assert result.must_be_clean


def test_a_vm_without_secrets_is_not_scanned() -> None:
    lab = FakeLab(Mode.SEV_SNP, secrets={}, leaks=[LEAK])
    result = attack_matrix.attack_booted(_attack(EXPECTED), lab)  # type: ignore[arg-type]
    assert lab.view.scans == [] and result.leaks == () and result.held


def test_run_boots_its_own_vm_and_closes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeLab] = []

    def boot(mode: Mode, bundles: object, random_bytes: object) -> FakeLab:
        made.append(FakeLab(mode, bundles, random_bytes))
        return made[-1]

    def fail(lab: object) -> Observed:
        raise RuntimeError("the attack broke")

    monkeypatch.setattr(attack_matrix, "BootLab", boot)
    result = attack_matrix.run(_attack(EXPECTED), Mode.SEV_SNP, os.urandom, "bundles")  # type: ignore[arg-type]
    assert result.held and [(lab.mode, lab.bundles, lab.closed) for lab in made] == [
        (Mode.SEV_SNP, "bundles", 1)]
    assert made[0].random_bytes is os.urandom
    with pytest.raises(RuntimeError, match="the attack broke"):
        attack_matrix.run(replace(_attack(EXPECTED), perform=fail), Mode.SEV,
                          os.urandom, "bundles")  # type: ignore[arg-type]
    assert made[1].closed == 1


def test_run_without_images_builds_them_for_its_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[Path, object, list[Mode]]] = []

    def build(scratch: Path, random_bytes: object, modes: list[Mode]) -> str:
        assert scratch.is_dir()
        built.append((scratch, random_bytes, modes))
        return "built"

    def seeded(size: int) -> bytes:
        return bytes(size)

    labs: list[FakeLab] = []
    monkeypatch.setattr(attack_matrix, "build_lab_bundles", build)
    monkeypatch.setattr(attack_matrix, "BootLab",
                        lambda mode, bundles, rnd: labs.append(FakeLab(mode, bundles, rnd))
                        or labs[-1])
    result = attack_matrix.run(_attack(EXPECTED), Mode.SEV_SNP)
    assert result.held and built[0][1] is os.urandom and built[0][2] == [Mode.SEV_SNP]
    assert not built[0][0].exists()  # the images were scratch
    attack_matrix.run(_attack(EXPECTED), Mode.SEV, seeded)
    assert built[1][1] is seeded and built[1][2] == [Mode.SEV]
    assert [(lab.mode, lab.bundles, lab.random_bytes) for lab in labs] == [
        (Mode.SEV_SNP, "built", os.urandom), (Mode.SEV, "built", seeded)]


class FakeClock:
    """``time.perf_counter`` that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


def test_a_cell_is_timed_from_the_boot_it_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(attack_matrix, "time", clock)

    def boot(mode: Mode, bundles: object, random_bytes: object) -> FakeLab:
        clock.now += 10.0  # the boot
        return FakeLab(mode, bundles)

    def perform(lab: object) -> Observed:
        clock.now += 1.0  # the attack
        return EXPECTED

    monkeypatch.setattr(attack_matrix, "BootLab", boot)
    attack = replace(_attack(EXPECTED), perform=perform)
    assert attack_matrix.run(attack, Mode.SEV_SNP, os.urandom, "b").seconds == 11.0  # type: ignore[arg-type]
    lab, before = FakeLab(Mode.SEV_SNP), clock.now
    assert attack_matrix.attack_booted(attack, lab, 80.0).seconds == before + 1.0 - 80.0  # type: ignore[arg-type]
    assert attack_matrix.attack_booted(attack, lab).seconds == 1.0  # type: ignore[arg-type]


def test_booted_is_kept_per_mode_seed_and_folder(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    made: list[FakeLab] = []

    def boot(mode: Mode, bundles: object, random_bytes: object, workdir: Path) -> FakeLab:
        made.append(FakeLab(mode, bundles, random_bytes, workdir))
        return made[-1]

    monkeypatch.setattr(attack_matrix, "BootLab", boot)
    one, two = tmp_path / "one", tmp_path / "two"
    try:
        lab = attack_matrix.booted(Mode.SEV, 3, "b", one)  # type: ignore[arg-type]
        assert attack_matrix.booted(Mode.SEV, 3, "b", one) is lab
        assert lab.random_bytes(16) == attack_matrix.boot_random(3, Mode.SEV)(16)
        assert lab.view.scans == [(("volume key",), "the host's files")]
        others = [attack_matrix.booted(Mode.SEV_ES, 3, "b", one),  # type: ignore[arg-type]
                  attack_matrix.booted(Mode.SEV, 4, "b", one),  # type: ignore[arg-type]
                  attack_matrix.booted(Mode.SEV, 3, "b", two)]  # type: ignore[arg-type]
        assert len({id(lab), *map(id, others)}) == 4 and len(made) == 4
        attack_matrix.forget_booted(one)
        assert [lab.closed for lab in made] == [1, 1, 1, 0]
        assert attack_matrix.booted(Mode.SEV, 3, "b", two) is others[2]  # type: ignore[arg-type]
        assert attack_matrix.booted(Mode.SEV, 3, "b", one) is not lab  # type: ignore[arg-type]
    finally:
        attack_matrix.forget_booted(one)
        attack_matrix.forget_booted(two)


@pytest.fixture
def exits_only_in_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a forked copy may leave through ``os._exit``: in the test's own process it would end
    the run with status 0, as if every test had passed."""
    test_process, leave = os.getpid(), os._exit

    def guarded(status: int) -> None:
        if os.getpid() == test_process:
            raise AssertionError(f"the test's own process called os._exit({status})")
        leave(status)

    monkeypatch.setattr(os, "_exit", guarded)


@pytest.mark.usefixtures("exits_only_in_copies")
def test_a_snapshot_cell_runs_in_its_own_copy(tmp_path: Path) -> None:
    lab = FakeLab(Mode.SEV_SNP, leaks=[LEAK])

    def perform(copy: Any) -> Observed:  # runs in the forked copy: report through the result
        assert copy.homes == [tmp_path] and copy.random_bytes(8) == \
            attack_matrix.cell_random(9, attack, Mode.SEV_SNP)(8)
        return Observed(Verdict.BLOCKED, f"in {os.getpid()}", Mechanism.RMP)

    attack = _attack(EXPECTED)
    attack = replace(attack, perform=perform)
    result = attack_matrix.in_snapshot(attack, lab, 9, tmp_path)  # type: ignore[arg-type]
    assert result.observed.detail != f"in {os.getpid()}" and result.as_expected
    assert result.leaks == (LEAK,) and result.must_be_clean and not result.held
    assert result.attack is attack and result.mode is Mode.SEV_SNP and result.seconds > 0
    assert lab.homes == [] and lab.closed == 0  # the parent's VM is untouched
    with pytest.raises(ChildProcessError):  # and the copy's process was waited for
        os.waitpid(-1, os.WNOHANG)


class TimedLab(FakeLab):
    """A fake VM whose copy takes 5 seconds to move to its folder."""

    clock: FakeClock | None = None

    def rehome(self, workdir: Path) -> None:
        assert self.clock is not None
        self.clock.now += 5.0
        super().rehome(workdir)


def test_a_snapshot_cell_is_timed_from_before_the_copy(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    clock = FakeClock()
    monkeypatch.setattr(attack_matrix, "time", clock)
    lab = TimedLab(Mode.SEV)
    lab.clock = clock

    def perform(copy: object) -> Observed:
        clock.now += 1.0
        return EXPECTED

    attack = replace(_attack(EXPECTED), perform=perform)
    assert attack_matrix.in_snapshot(attack, lab, 1, tmp_path).seconds == 6.0  # type: ignore[arg-type]
    es = attack_matrix.in_snapshot(replace(attack, perform=lambda copy: EXPECTED),
                                   FakeLab(Mode.SEV_ES, leaks=[LEAK]), 9, tmp_path)  # type: ignore[arg-type]
    assert es.must_be_clean  # a memory attack under SEV-ES
    state = replace(attack, family=Family.STATE, perform=lambda copy: EXPECTED)
    assert not attack_matrix.in_snapshot(state, FakeLab(Mode.SEV_ES), 9,
                                         tmp_path).must_be_clean  # type: ignore[arg-type]


@pytest.mark.usefixtures("exits_only_in_copies")
def test_a_failing_copy_is_an_error_naming_the_cell(tmp_path: Path) -> None:
    def fail(copy: object) -> Observed:
        raise RuntimeError("the copy broke")

    attack = replace(_attack(EXPECTED), perform=fail)
    with pytest.raises(StateError) as raised:
        attack_matrix.in_snapshot(attack, FakeLab(Mode.SEV), 1, tmp_path)  # type: ignore[arg-type]
    assert str(raised.value).startswith(
        "remap-page (sev) failed in its copy of the VM:\nTraceback")
    assert "RuntimeError: the copy broke" in str(raised.value)

    def die(copy: object) -> Observed:
        os._exit(3)

    with pytest.raises(StateError, match=r"^the copy of the VM for remap-page \(sev\) died$"):
        attack_matrix.in_snapshot(replace(attack, perform=die), FakeLab(Mode.SEV), 1,
                                  tmp_path)  # type: ignore[arg-type]


def test_without_fork_a_cell_boots_afresh(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    calls: list[tuple[Attack, Mode, bytes, object]] = []

    def run(attack: Attack, mode: Mode, random_bytes: Any, bundles: object) -> str:
        calls.append((attack, mode, random_bytes(8), bundles))
        return "fresh"

    monkeypatch.delattr(os, "fork")
    monkeypatch.setattr(attack_matrix, "run", run)
    attack = _attack(EXPECTED)
    lab = FakeLab(Mode.SEV_ES, bundles="b")
    assert attack_matrix.in_snapshot(attack, lab, 5, tmp_path) == "fresh"  # type: ignore[arg-type]
    assert calls == [(attack, Mode.SEV_ES, attack_matrix.cell_random(5, attack, Mode.SEV_ES)(8),
                      "b")]


# --- the whole runner, with fake images and a fake booted VM ---------------------------------


@dataclass
class FakeBundles:
    built: tuple[Mode, ...]


def _fake_runner(monkeypatch: pytest.MonkeyPatch, stages: list[tuple[Mode, ...]],
                 attacks: dict[str, Attack]) -> dict[str, list[Any]]:
    """Images built in ``stages`` (the modes each stage has built so far), a fake VM per mode,
    the catalogue replaced by ``attacks``; returns what the runner asked for."""
    asked: dict[str, list[Any]] = {"stages": [], "labs": [], "vendor": []}

    def stages_of(scratch: Path, random_bytes: Any, modes: list[Mode]) -> Any:
        assert scratch.is_dir()
        asked["stages"].append((tuple(modes), random_bytes))
        return iter([FakeBundles(stage) for stage in stages])

    def boot(mode: Mode, bundles: object, random_bytes: object, workdir: Path) -> FakeLab:
        asked["labs"].append(FakeLab(mode, bundles, random_bytes, workdir, leaks=[LEAK]))
        return asked["labs"][-1]  # type: ignore[no-any-return]

    monkeypatch.setattr(attack_matrix, "lab_bundle_stages", stages_of)
    monkeypatch.setattr(attack_matrix, "groups_built",
                        lambda bundles, modes: [m for m in modes if m in bundles.built])
    monkeypatch.setattr(attack_matrix, "BootLab", boot)
    monkeypatch.setattr(attack_matrix, "by_name", attacks.__getitem__)
    monkeypatch.setattr(attack_matrix, "default_vendor", asked["vendor"].append)
    return asked


def _cells(results: list[Result]) -> list[tuple[str, Mode, Verdict, bool, bool, bool]]:
    return [(r.attack.name, r.mode, r.observed.verdict, r.leaks == (LEAK,), r.must_be_clean,
             r.held) for r in results]


def _where(copy: Any) -> Observed:
    """An attack that reports where it ran: the process its copy was forked from, the copy's
    folder and the VM's folder, and the copy's first random bytes."""
    return Observed(Verdict.BLOCKED, f"{os.getppid()}|{copy.homes}|{copy.workdir}|"
                                     f"{copy.random_bytes(8).hex()}|{copy.bundles}",
                    Mechanism.RMP)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_matrix_runs_every_cell_once_in_table_order(monkeypatch: pytest.MonkeyPatch,
                                                        workers: int) -> None:
    memory = replace(_blocked_in_snp(), name="fake-memory", perform=_where)
    state = replace(_blocked_in_snp(), name="fake-state", family=Family.STATE, perform=_where)
    asked = _fake_runner(monkeypatch, [(Mode.SEV_SNP,), (Mode.SEV_SNP, Mode.SEV)],
                         {"fake-memory": memory, "fake-state": state})
    progress: list[tuple[str, Mode]] = []
    results = attack_matrix.matrix([memory, state], [Mode.SEV, Mode.SEV_SNP], seed=4,
                                   progress=lambda a, m: progress.append((a.name, m)),
                                   workers=workers)
    [(modes, build_random)] = asked["stages"]
    assert modes == (Mode.SEV, Mode.SEV_SNP)
    assert build_random(16) == random.Random(4).randbytes(16)
    blocked = Verdict.BLOCKED
    assert _cells(results) == [
        ("fake-memory", Mode.SEV, blocked, True, False, False),  # SEV: remap-page succeeds
        ("fake-memory", Mode.SEV_SNP, blocked, True, True, False),  # leaked where it must not
        ("fake-state", Mode.SEV, blocked, True, False, False),
        ("fake-state", Mode.SEV_SNP, blocked, True, True, False),
    ]
    assert sorted(progress, key=str) == sorted(
        [(r.attack.name, r.mode) for r in results], key=str)
    assert [r.attack for r in results] == [memory, memory, state, state]
    assert attack_matrix._BOOTED == {}  # the booted VMs of the run's scratch are closed
    for result in results:
        parent, homes, workdir, random_bytes, bundles = result.observed.detail.split("|")
        assert bundles.startswith("FakeBundles(") and isinstance(result.seconds, float)
        assert (parent == str(os.getpid())) is (workers == 1)  # in a worker when asked
        assert workdir != "None" and homes == f"[{Path(workdir)!r}]"
        assert random_bytes == attack_matrix.cell_random(4, result.attack, result.mode)(8).hex()
    if workers == 1:  # the SEV-SNP group was built first, so its cells ran first
        assert progress == [("fake-memory", Mode.SEV_SNP), ("fake-state", Mode.SEV_SNP),
                            ("fake-memory", Mode.SEV), ("fake-state", Mode.SEV)]
        assert [(lab.mode, lab.random_bytes(8)) for lab in asked["labs"]] == [
            (mode, attack_matrix.boot_random(4, mode)(8)) for mode in (Mode.SEV_SNP, Mode.SEV)]
        assert [lab.closed for lab in asked["labs"]] == [1, 1]
        assert asked["vendor"] == []
    else:  # the vendor's roots derived before the workers fork
        assert asked["vendor"] == [attack_matrix.PRODUCT]


def test_the_matrix_without_progress_and_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = replace(_blocked_in_snp(), name="fake", perform=_where)
    asked = _fake_runner(monkeypatch, [(Mode.SEV_SNP,)], {"fake": clean})
    results = attack_matrix.matrix([clean], [Mode.SEV_SNP])  # in this process by default
    assert results[0].observed.detail.startswith(f"{os.getpid()}|")
    results += attack_matrix.matrix([clean], [Mode.SEV_SNP], workers=2)
    assert _cells(results) == [("fake", Mode.SEV_SNP, Verdict.BLOCKED, True, True, False)] * 2
    assert [build_random for _, build_random in asked["stages"]] == [os.urandom, os.urandom]


def test_a_worker_cell_goes_by_names_and_returns_plain_records(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def perform(copy: Any) -> Observed:  # what the copy was given, sent back in the detail
        return Observed(Verdict.BLOCKED, f"{copy.homes} {copy.random_bytes(8).hex()}",
                        Mechanism.RMP)

    attack = replace(_blocked_in_snp(), name="fake", perform=perform)
    _fake_runner(monkeypatch, [], {"fake": attack})
    try:
        observed, leaks, clean, seconds = attack_matrix._cell("fake", "snp", 6, "b", tmp_path)  # type: ignore[arg-type]
        random_bytes = attack_matrix.cell_random(6, attack, Mode.SEV_SNP)(8).hex()
        assert observed == Observed(Verdict.BLOCKED, f"{[tmp_path]} {random_bytes}",
                                    Mechanism.RMP)
        assert (leaks, clean) == ((LEAK,), True) and seconds > 0
        lab = attack_matrix._BOOTED[Mode.SEV_SNP, 6, str(tmp_path)]
        assert lab.bundles == "b" and lab.mode is Mode.SEV_SNP
        assert attack_matrix._cell("fake", "sev", 6, "b", tmp_path)[2] is False  # type: ignore[arg-type]
    finally:
        attack_matrix.forget_booted(tmp_path)
