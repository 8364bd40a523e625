"""The attack matrix: every attack against the running confidential VM of every mode, and what
held.

For each mode the runner boots one VM from the owner's image (:class:`~cvm.scenarios.boot_lab.
BootLab`: launch, SVSM and vTPM, Secure Boot and measured boot, the initramfs opening the LUKS2
root, the workload), recording everything the host can read from the first instruction on
(:class:`HostView`). Each (attack, mode) then runs against its own copy of that booted VM — a
forked process holds a snapshot of the whole machine, host and guest — so no attack disturbs
another's. After the attack, everything the host can read (DRAM, exit views, VMSA pages, the
disk image, the vTPM state file, its logs) is scanned for any 8-byte run of any secret the VM
held (volume key, workload data, vTPM seeds and state key, VMPCK0). A cell *holds* when the
observed outcome equals the expectation (verdict and mechanism) and, where the mode must
protect the guest's secrets, the scan is clean.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import random
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from cvm.amd.pki import default_vendor
from cvm.errors import StateError
from cvm.guest.run import PRODUCT
from cvm.hardware.vm import Mode
from cvm.host.adversary.canary import CanaryScan, Leak
from cvm.host.adversary.catalog import ATTACKS, by_name
from cvm.host.adversary.threat import MODES, Attack, Expected, Family, Observed
from cvm.scenarios.attack_bundles import (
    LabBundles,
    build_lab_bundles,
    groups_built,
    lab_bundle_stages,
)
from cvm.scenarios.boot_lab import BootLab

RandomBytes = Callable[[int], bytes]
# The attacks on the running VM itself (its memory, registers, CPU interface, launch and
# evidence), as opposed to those on the files it boots from and the state it keeps at rest.
RUNTIME_FAMILIES = (Family.MEMORY, Family.REGISTERS, Family.CPU, Family.LAUNCH, Family.EVIDENCE)


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
        return matches_expectation(self)

    @property
    def scan_clean(self) -> bool:
        return not self.leaks

    @property
    def held(self) -> bool:
        """The outcome is the expected one, and no secret leaked where the mode must protect."""
        return cell_held(self)


def matches_expectation(result: Result) -> bool:
    """Is the observed outcome of ``result`` its expected one, verdict and mechanism both?"""
    return result.observed.matches(result.attack.expected(result.mode))


def cell_held(result: Result) -> bool:
    """Did the cell hold: the outcome is the expected one, and the canary scan found nothing
    where the mode must protect the guest's secrets?"""
    return matches_expectation(result) and (not result.leaks or not result.must_be_clean)


def must_be_clean(mode: Mode, family: Family) -> bool:
    """Must the canary scan be clean? Always under SEV-SNP; under SEV-ES for the memory,
    register and launch-time attacks (its vTPM and disk key are the host's, so not beyond)."""
    if mode is Mode.SEV_SNP:
        return True
    return mode is Mode.SEV_ES and family in RUNTIME_FAMILIES


def run(attack: Attack, mode: Mode, random_bytes: RandomBytes = os.urandom,
        bundles: LabBundles | None = None) -> Result:
    """Boot a fresh VM of ``mode`` from the owner's image, perform ``attack`` against it and
    scan what the host can read.

    ``bundles``: the images (built here, once, when not given)."""
    if bundles is None:
        with tempfile.TemporaryDirectory(prefix="cvm-bundles-") as scratch:
            built = build_lab_bundles(Path(scratch), random_bytes, [mode])
            return run(attack, mode, random_bytes, built)
    start = time.perf_counter()
    lab = BootLab(mode, bundles, random_bytes)
    try:
        return attack_booted(attack, lab, start)
    finally:
        lab.close()


def attack_booted(attack: Attack, lab: BootLab, start: float | None = None) -> Result:
    """Perform ``attack`` against the running VM of ``lab`` and scan everything the host can
    read for every secret each of its boots held (read through the guest as each boot ended:
    the booted VM's, and those of any boot the attack caused)."""
    start = time.perf_counter() if start is None else start
    observed = attack.perform(lab)
    secrets = lab.known_secrets()
    leaks = lab.view.scan(CanaryScan(secrets), lab.host_files()) if secrets else []
    seconds = time.perf_counter() - start
    return Result(attack, lab.mode, observed, tuple(leaks), must_be_clean(lab.mode, attack.family),
                  seconds)


def cell_random(seed: int | None, attack: Attack, mode: Mode) -> RandomBytes:
    """The randomness of one cell: from ``seed`` and the cell's name (reproducible in any order
    and any process), or the OS's."""
    if seed is None:
        return os.urandom
    return random.Random(f"{seed}/{attack.name}/{mode.value}").randbytes


def boot_random(seed: int | None, mode: Mode) -> RandomBytes:
    """The randomness of the boot every cell of ``mode`` starts from."""
    if seed is None:
        return os.urandom
    return random.Random(f"{seed}/boot/{mode.value}").randbytes


Outcome = tuple[Observed, tuple[Leak, ...], bool, float]

# The booted VM per (mode, seed, workdir) of this process: every cell of that mode starts from
# a copy of it (a forked process is a snapshot of the whole machine, the host and the guest).
_BOOTED: dict[tuple[Mode, int | None, str], BootLab] = {}


def booted(mode: Mode, seed: int | None, bundles: LabBundles, workdir: Path) -> BootLab:
    """This process's booted VM of ``mode`` (booted on first use, then kept)."""
    key = (mode, seed, str(workdir))
    lab = _BOOTED.get(key)
    if lab is None:
        lab = _BOOTED[key] = BootLab(mode, bundles, boot_random(seed, mode), workdir)
        # The scan of what the host can read right after the boot: each copy's scan of the
        # same disk blocks is then answered from the scanner's cache (inherited by the fork).
        lab.view.scan(CanaryScan(lab.known_secrets()), lab.host_files())
    return lab


def forget_booted(workdir: Path) -> None:
    """Close this process's booted VMs kept for ``workdir``."""
    for key in [key for key in _BOOTED if key[2] == str(workdir)]:
        _BOOTED.pop(key).close()


def in_snapshot(attack: Attack, lab: BootLab, seed: int | None, workdir: Path) -> Result:
    """Perform ``attack`` against a copy of ``lab``'s running VM, in a child process forked
    for it (its own copy of the machine, the host, the guest and the host's files), so that no
    attack can disturb another's VM. Falls back to a fresh boot where there is no fork."""
    if not hasattr(os, "fork"):
        return run(attack, lab.mode, cell_random(seed, attack, lab.mode), lab.bundles)
    start = time.perf_counter()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: attack it, send the result back, and leave without cleanup
        os.close(reader)
        try:
            lab.rehome(workdir)
            lab.random_bytes = cell_random(seed, attack, lab.mode)
            try:
                result = attack_booted(attack, lab, start)
                outcome: tuple[bool, object] = (True, (result.observed, result.leaks,
                                                       result.seconds))
            finally:
                lab.close()
        except BaseException:  # everything goes back to the parent
            outcome = (False, traceback.format_exc())
        with os.fdopen(writer, "wb") as out:
            out.write(pickle.dumps(outcome))
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as source:
        data = source.read()
    os.waitpid(pid, 0)
    if not data:
        raise StateError(f"the copy of the VM for {attack.name} ({lab.mode.value}) died")
    ok, value = pickle.loads(data)
    if not ok:
        raise StateError(f"{attack.name} ({lab.mode.value}) failed in its copy of the VM:\n"
                         f"{value}")
    observed, leaks, seconds = value
    return Result(attack, lab.mode, observed, leaks, must_be_clean(lab.mode, attack.family),
                  seconds)


def _cell(name: str, mode: str, seed: int | None, bundles: LabBundles,
          workdir: Path) -> Outcome:
    """One cell, in a worker process: names go in, plain records come back."""
    attack, chosen = by_name(name), Mode.parse(mode)
    result = in_snapshot(attack, booted(chosen, seed, bundles, workdir), seed, workdir)
    return result.observed, result.leaks, result.must_be_clean, result.seconds


def _ready() -> bool:
    return True


def _cost(attack: Attack) -> int:
    """Attacks that boot again first (they take longest), so two workers finish together."""
    return 1 if attack.family in (Family.BOOT_FILES, Family.STATE) else 0


def matrix(
    attacks: Iterable[Attack] = ATTACKS,
    modes: Iterable[Mode] = MODES,
    seed: int | None = None,
    progress: Callable[[Attack, Mode], None] | None = None,
    workers: int = 1,
) -> list[Result]:
    """Every attack in every mode, in table order; ``progress`` is called as each cell ends.

    Each process boots one VM per mode from the owner's image and runs every cell against a
    forked copy of it (:func:`in_snapshot`). With ``workers`` > 1 the cells run in that many
    worker processes."""
    attacks, modes = list(attacks), list(modes)
    cells = [(attack, mode) for attack in attacks for mode in modes]
    done: dict[tuple[str, Mode], Result] = {}
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
        else:
            stack.callback(forget_booted, scratch)
        futures: dict[Future[Outcome], tuple[Attack, Mode]] = {}
        started: set[Mode] = set()
        # The cells of a mode group start as soon as its images are built (under workers, the
        # next group builds meanwhile).
        for bundles in lab_bundle_stages(scratch, build_random, modes):
            ready = [mode for mode in groups_built(bundles, modes) if mode not in started]
            started.update(ready)
            group = [(attack, mode) for attack, mode in cells if mode in ready]
            if pool is None:
                for attack, mode in group:
                    lab = booted(mode, seed, bundles, scratch)
                    done[attack.name, mode] = in_snapshot(attack, lab, seed, scratch)
                    if progress is not None:
                        progress(attack, mode)
                continue
            for attack, mode in sorted(group, key=lambda cell: (cell[1] is not Mode.SEV_SNP,
                                                                -_cost(cell[0]))):
                future = pool.submit(_cell, attack.name, mode.value, seed, bundles, scratch)
                futures[future] = (attack, mode)
        for future in as_completed(futures):
            attack, mode = futures[future]
            observed, leaks, clean, seconds = future.result()
            done[attack.name, mode] = Result(attack, mode, observed, leaks, clean, seconds)
            if progress is not None:
                progress(attack, mode)
    return [done[attack.name, mode] for attack, mode in cells]
