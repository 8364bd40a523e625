"""The attack matrix: every attack against a fresh live VM of every mode, and what held.

For each (attack, mode) the runner starts a lab (:mod:`cvm.scenarios.attack_lab`), records
everything the host can read from the first instruction on (:class:`HostView`), performs the
attack, then scans all of it for any 8-byte run of any of the VM's secrets. A cell *holds* when
the observed outcome equals the expectation (verdict and mechanism) and, where the mode must
protect the guest's secrets, the scan is clean.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from cvm.amd.pki import default_vendor
from cvm.guest.run import PRODUCT
from cvm.hardware.vm import Mode
from cvm.host.adversary.canary import CanaryScan, Leak
from cvm.host.adversary.catalog import ATTACKS, by_name
from cvm.host.adversary.threat import MODES, Attack, Expected, Family, Observed
from cvm.scenarios.attack_bundles import LabBundles, build_lab_bundles
from cvm.scenarios.attack_lab import LaunchedLab
from cvm.scenarios.boot_lab import BootLab

RandomBytes = Callable[[int], bytes]
LAUNCH_FAMILIES = (Family.MEMORY, Family.REGISTERS, Family.CPU, Family.LAUNCH, Family.EVIDENCE)


@dataclass(frozen=True)
class Result:
    """One cell of the matrix."""

    attack: Attack
    mode: Mode
    observed: Observed
    leaks: tuple[Leak, ...]
    must_be_clean: bool
    seconds: float

    @property
    def expected(self) -> Expected:
        return self.attack.expected(self.mode)

    @property
    def as_expected(self) -> bool:
        return self.observed.matches(self.expected)

    @property
    def scan_clean(self) -> bool:
        return not self.leaks

    @property
    def held(self) -> bool:
        """The outcome is the expected one, and no secret leaked where the mode must protect."""
        return self.as_expected and (self.scan_clean or not self.must_be_clean)


def must_be_clean(mode: Mode, family: Family) -> bool:
    """Must the canary scan be clean? Always under SEV-SNP; under SEV-ES for the memory,
    register and launch-time attacks (its vTPM and disk key are the host's, so not beyond)."""
    if mode is Mode.SEV_SNP:
        return True
    return mode is Mode.SEV_ES and family in LAUNCH_FAMILIES


def run(attack: Attack, mode: Mode, random_bytes: RandomBytes = os.urandom,
        bundles: LabBundles | None = None) -> Result:
    """Perform ``attack`` against a fresh VM of ``mode`` and scan what the host can read.

    The boot-file and state attacks boot VMs from image bundles: ``bundles`` (built here, once,
    when not given)."""
    start = time.perf_counter()
    if attack.family in LAUNCH_FAMILIES:
        lab = LaunchedLab(mode, random_bytes)
        secrets = lab.secrets()
        observed = attack.perform(lab)
        leaks = lab.platform.view.scan(CanaryScan(secrets))
    else:
        if bundles is None:
            with tempfile.TemporaryDirectory(prefix="cvm-bundles-") as scratch:
                built = build_lab_bundles(Path(scratch), random_bytes, [mode])
                return run(attack, mode, random_bytes, built)
        boot_lab = BootLab(mode, bundles, random_bytes)
        try:
            observed = attack.perform(boot_lab)
            secrets = boot_lab.secrets()
            scanner = CanaryScan(secrets)
            leaks = boot_lab.view.scan(scanner, boot_lab.host_files()) if secrets else []
        finally:
            boot_lab.close()
    seconds = time.perf_counter() - start
    return Result(attack, mode, observed, tuple(leaks), must_be_clean(mode, attack.family),
                  seconds)


def cell_random(seed: int | None, attack: Attack, mode: Mode) -> RandomBytes:
    """The randomness of one cell: from ``seed`` and the cell's name (reproducible in any order
    and any process), or the OS's."""
    if seed is None:
        return os.urandom
    return random.Random(f"{seed}/{attack.name}/{mode.value}").randbytes


Outcome = tuple[Observed, tuple[Leak, ...], bool, float]


def _cell(name: str, mode: str, seed: int | None, bundles: LabBundles | None) -> Outcome:
    """One cell, in a worker process: names go in, plain records come back."""
    attack, chosen = by_name(name), Mode.parse(mode)
    result = run(attack, chosen, cell_random(seed, attack, chosen), bundles)
    return result.observed, result.leaks, result.must_be_clean, result.seconds


def _ready() -> bool:
    return True


def _cost(attack: Attack) -> int:
    """Boot attacks first (they take longest), so two workers finish together."""
    return 0 if attack.family in LAUNCH_FAMILIES else 1


def matrix(
    attacks: Iterable[Attack] = ATTACKS,
    modes: Iterable[Mode] = MODES,
    seed: int | None = None,
    progress: Callable[[Attack, Mode], None] | None = None,
    workers: int = 1,
) -> list[Result]:
    """Every attack in every mode, in table order; ``progress`` is called as each cell ends.

    With ``workers`` > 1 the cells run in that many worker processes (each cell on its own
    host, as always)."""
    attacks, modes = list(attacks), list(modes)
    cells = [(attack, mode) for attack in attacks for mode in modes]
    done: dict[tuple[str, Mode], Result] = {}
    needs_bundles = any(a.family not in LAUNCH_FAMILIES for a in attacks)
    build_random = os.urandom if seed is None else random.Random(seed).randbytes
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvm-bundles-")))
        pool = None
        if workers > 1:
            # The workers are forked once the vendor's roots are derived (slow, pure Python)
            # and before anything starts a thread; they inherit the roots.
            default_vendor(PRODUCT)
            context = multiprocessing.get_context("fork")
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=context))
            pool.submit(_ready).result()
        bundles = build_lab_bundles(scratch, build_random, modes) if needs_bundles else None
        if pool is None:
            for attack, mode in cells:
                done[attack.name, mode] = run(attack, mode, cell_random(seed, attack, mode),
                                              bundles)
                if progress is not None:
                    progress(attack, mode)
        else:
            ordered = sorted(cells, key=lambda cell: -_cost(cell[0]))
            futures = {
                pool.submit(_cell, attack.name, mode.value, seed, bundles): (attack, mode)
                for attack, mode in ordered
            }
            for future in as_completed(futures):
                attack, mode = futures[future]
                observed, leaks, clean, seconds = future.result()
                done[attack.name, mode] = Result(attack, mode, observed, leaks, clean, seconds)
                if progress is not None:
                    progress(attack, mode)
    return [done[attack.name, mode] for attack, mode in cells]
