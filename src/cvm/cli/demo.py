"""``cvm demo``: the main job. Build, launch, boot and attack confidential VMs; show what held.

Chapters: (1) one host, four guests, one secret — what the guest and the host read of the same
page; (2) the host's memory and register attacks per mode; (3) launch and remote attestation
against launch-time tampering; (4) encryption at rest; (5) Secure Boot and measured boot
against a host that edits the ESP; (6) the disk key sealed by the vTPM in the SVSM, released
only to the predicted boot. It writes a self-contained HTML report
(two pictures per mode, then every table) and exits non-zero if any outcome differs from what
the architecture promises.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cvm.hardware.vm import Mode
from cvm.scenarios import (
    attestation,
    boot_attacks,
    disk_at_rest,
    memory_attacks,
    memory_views,
    sealed_disk,
)
from cvm.scenarios.picture import Table as ReportTable
from cvm.scenarios.picture import grey_png, html_report

NOTES = {
    Mode.PLAIN: "No encryption: the host reads the guest's page as the guest wrote it.",
    Mode.SEV: "The engine encrypts the page with the guest's key: the host sees ciphertext.",
    Mode.SEV_ES: "Memory and register state encrypted; the host sees ciphertext.",
    Mode.SEV_SNP: "Encrypted, and the RMP refuses every host write to the page.",
}
RandomBytes = Callable[[int], bytes]


class _Run:
    """The state of one demo run: console, randomness, report tables and the tally."""

    def __init__(self, console: Console, random_bytes: RandomBytes) -> None:
        self.console = console
        self.random_bytes = random_bytes
        self.tables: list[ReportTable] = []
        self.held = 0
        self.total = 0

    def check(self, ok: bool) -> str:
        self.total += 1
        self.held += ok
        return "" if ok else "*"

    def table(self, caption: str, header: list[str], rows: list[list[str]]) -> None:
        shown = Table(*header, title=caption, title_justify="left")
        for row in rows:
            shown.add_row(*(c[:-1] + " (unexpected)" if c.endswith("*") else c for c in row))
        self.console.print(shown)
        self.tables.append((caption, header, rows))


def demo(
    out: Path = typer.Option(Path("cvm-demo"), "--out", help="Folder for the HTML report."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for a reproducible run."),
) -> None:
    """Launch a VM in each mode, attack it from the host, and show what held."""
    random_bytes: RandomBytes = random.Random(seed).randbytes if seed is not None else os.urandom
    run = _Run(Console(), random_bytes)
    secret = b"owner's disk key: " + random_bytes(14)

    views = _memory_views(run, secret)
    _memory_attacks(run)
    _attestation(run)
    _disk(run, secret)
    owner = _boot(run)
    _sealed(run, owner)

    out.mkdir(parents=True, exist_ok=True)
    panels = [
        (f"{v.mode.value} (ASID {v.asid})", v.guest_view, v.host_view, NOTES[v.mode])
        for v in views
    ]
    report = out / "report.html"
    title = "cvm demo: what the host sees, and what held"
    _write(report, html_report(title, panels, run.tables).encode())
    _write(out / "sev-snp-host-view.png", grey_png(views[-1].host_view, 64))
    _write(out / "plain-host-view.png", grey_png(views[0].host_view, 64))
    run.console.print(
        f"{run.held}/{run.total} outcomes as the architecture promises. "
        f"Report: [bold]{report}[/bold]"
    )
    if run.held != run.total:
        raise typer.Exit(1)


def _memory_views(run: _Run, secret: bytes) -> list[memory_views.PageViews]:
    run.console.print("[bold]1. One host, four guests, one secret[/bold]")
    views = memory_views.launch_all(secret, run.random_bytes)
    rows = []
    start = -len(secret)
    for view in views:
        guest_text = view.guest_view[start : start + 16]
        host_text = view.host_view[start : start + 16]
        leaked = view.host_sees_plaintext
        seen = _printable(host_text) if leaked else host_text[:8].hex() + "…"
        mark = run.check(leaked == (view.mode is Mode.PLAIN))
        rows.append([view.mode.value, str(view.asid), _printable(guest_text), seen + mark])
    run.table("The secret page", ["mode", "ASID", "guest reads", "host reads"], rows)
    return views


def _memory_attacks(run: _Run) -> None:
    run.console.print("[bold]2. The host attacks memory and registers[/bold]")
    header = ["host action", *(m.value for m in memory_attacks.MODES)]
    rows: list[list[str]] = []
    total = len(memory_attacks.ATTACKS) * len(memory_attacks.MODES)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=run.console, transient=True) as progress:
        task = progress.add_task("attacking", total=total)
        for name, (title, _) in memory_attacks.ATTACKS.items():
            row = [title]
            for mode in memory_attacks.MODES:
                progress.update(task, description=f"{name} vs {mode.value}")
                outcome = memory_attacks.run(name, mode, run.random_bytes)
                expected = memory_attacks.expected(name, mode)
                row.append(outcome.observed + run.check(outcome.observed == expected))
                progress.advance(task)
            rows.append(row)
    run.table("SEV-SNP whitepaper, Table 1 (memory rows), live", header, rows)


def _attestation(run: _Run) -> None:
    run.console.print("[bold]3. Launch and remote attestation: the host tampers at launch[/bold]")
    with run.console.status("deriving the emulated AMD roots and launching guests"):
        world = attestation.owner_world(run.random_bytes)
        outcomes = attestation.run_all(world)
    rows = []
    for outcome in outcomes:
        verdict = "accepted" if outcome.accepted else "refused"
        first = outcome.findings[0] if outcome.findings else "measurement, policy, TCB, nonce ok"
        why = first if len(first) <= 90 else first[:89] + "…"
        rows.append([outcome.attempt, verdict + run.check(attestation.as_expected(outcome)),
                     ", ".join(outcome.claims) or "-", why])
    caption = "SNP reports appraised against the owner's predicted measurement and a fresh nonce"
    run.table(caption, ["attempt", "verdict", "findings", "first finding"], rows)


def _disk(run: _Run, secret: bytes) -> None:
    run.console.print("[bold]4. Encryption at rest: a LUKS2 root, before the host has it[/bold]")
    outcome = disk_at_rest.run(secret, b"owner passphrase")
    rows = [
        ["what the host holds", f"{outcome.image_bytes >> 20} MiB, {outcome.header_summary}"],
        [
            "host scans every byte for the secret",
            ("found" if outcome.host_finds_secret else "not found")
            + run.check(not outcome.host_finds_secret),
        ],
        [
            "a guessed passphrase",
            ("refused" if outcome.wrong_key_refused else "accepted")
            + run.check(outcome.wrong_key_refused),
        ],
        [
            "the owner's key",
            ("opens the volume" if outcome.key_opens_volume else "fails")
            + run.check(outcome.key_opens_volume),
        ],
    ]
    run.table("LUKS2 root, aes-xts-plain64", ["step", "outcome"], rows)


def _boot(run: _Run) -> boot_attacks.OwnerImage:
    run.console.print("[bold]5. Secure Boot and measured boot: the host edits the ESP[/bold]")
    owner = boot_attacks.build_owner_image()
    rows = []
    for outcome in boot_attacks.run_all(owner):
        expected = boot_attacks.EXPECTED[outcome.attack]
        held = (outcome.booted, outcome.pcrs_match_prediction) == expected
        verdict = "booted" if outcome.booted else "refused"
        if not outcome.booted:
            pcrs = "(no boot)"
        else:
            pcrs = "as predicted" if outcome.pcrs_match_prediction else "differ from prediction"
        rows.append([outcome.attack, verdict + run.check(held), pcrs, outcome.reason])
    caption = f"Owner-signed UKI; PCR {', '.join(map(str, boot_attacks.SEALED_PCRS))} predicted"
    run.table(caption, ["attempt", "boot", "PCRs", "why"], rows)
    return owner


def _sealed(run: _Run, owner: boot_attacks.OwnerImage) -> None:
    run.console.print("[bold]6. The vTPM at VMPL0 holds the disk key for the predicted boot[/bold]")
    rows = []
    for outcome in sealed_disk.run(owner, run.random_bytes):
        expected = sealed_disk.EXPECTED_UNSEALED[outcome.attempt]
        verdict = "key released" if outcome.unsealed else "key stays sealed"
        detail = outcome.detail if len(outcome.detail) <= 90 else outcome.detail[:89] + "…"
        rows.append([outcome.attempt, verdict + run.check(outcome.unsealed == expected), detail])
    caption = "systemd-tpm2 LUKS2 token sealed to the predicted PCRs; vTPM state sealed at rest"
    run.table(caption, ["boot", "disk key", "why"], rows)


def _printable(data: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in data)


def _write(path: Path, data: bytes) -> None:
    """Write atomically: a failed write leaves the previous file intact."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
