"""What ``cvm demo`` concludes: the boot held (every check of its trace passed and the canary
scan of everything the host can read found nothing), every attack's outcome is the one its mode
promises, the summary line that says so, and the exit code: 0 when the whole story held, 1 when
the boot failed or leaked or any outcome differs. Also the attacks the demo runs (``--family``).
"""

from __future__ import annotations

from cvm.errors import UsageError
from cvm.guest.trace import VmTrace
from cvm.host.adversary.canary import CanaryScan, Leak
from cvm.host.adversary.catalog import ATTACKS
from cvm.host.adversary.threat import MODES, Attack, Family
from cvm.host.vm_run import host_view
from cvm.scenarios import attack_matrix


def scan_line(leaks: list[Leak], scanned: int) -> str:
    """What the canary scan of the boot found: clean, or how many leaks and the first."""
    found = "clean" if not leaks else f"[red]{len(leaks)} leak(s), first {leaks[0]}[/red]"
    return (f"canary scan of everything the host can read ({scanned >> 20} MiB: DRAM, exits, "
            f"disk, state file, logs): {found}")


def boot_held(trace_ok: bool, leaks: list[Leak]) -> bool:
    """The SEV-SNP boot held: every check of its trace passed, and nothing of it leaked."""
    return trace_ok and not leaks


def all_held(booted: bool, results: list[attack_matrix.Result]) -> bool:
    """The story held: the boot held and every attack's outcome is the one the mode promises."""
    return booted and sum(r.held for r in results) == len(results)


def verdict_line(booted: bool, results: list[attack_matrix.Result], elapsed: float) -> str:
    """The summary line that ends the demo and heads its report."""
    held = sum(r.held for r in results)
    return (f"{'HELD' if all_held(booted, results) else 'BROKEN'}: the SEV-SNP VM "
            f"{'booted, opened its root and leaked nothing' if booted else 'FAILED'}; "
            f"{held}/{len(results)} attack outcomes as the architecture promises "
            f"({len(results) // len(MODES)} attacks × {len(MODES)} modes) in {elapsed:.1f} s")


def exit_code(booted: bool, results: list[attack_matrix.Result]) -> int:
    """0 when the story held; 1 when the boot failed or leaked, or any outcome differs."""
    return 0 if all_held(booted, results) else 1


def chosen_attacks(families: list[str] | None) -> list[Attack]:
    """Every attack of the families named (``--family``, repeated), or every attack."""
    known = {f.value: f for f in Family}
    unknown = [name for name in families or [] if name not in known]
    if unknown:
        raise UsageError(f"--family: {unknown[0]!r} is not one of {', '.join(known)}")
    wanted = {known[name] for name in families or []}
    return [a for a in ATTACKS if not wanted or a.family in wanted]


def scan(trace: VmTrace) -> tuple[list[Leak], int]:
    """Scan everything the host could read of the demo's boot for the VM's secrets."""
    if trace.run is None:
        return [], 0
    view = host_view(trace.run)
    leaks = CanaryScan(trace.secrets()).scan_all(view.items())
    return leaks, sum(len(data) for data in view.values())
