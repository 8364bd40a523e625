"""``cvm demo``: the main job. Launch a VM in each mode, attack it from the host, show what held.

It writes a self-contained HTML report (two pictures per mode: the secret page as the guest
reads it and as the host reads it, then the attack table) and prints a short summary.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cvm.hardware.vm import Mode
from cvm.scenarios import memory_attacks, memory_views
from cvm.scenarios.picture import grey_png, html_report

NOTES = {
    Mode.PLAIN: "No encryption: the host reads the guest's page as the guest wrote it.",
    Mode.SEV: "The engine encrypts the page with the guest's key: the host sees ciphertext.",
    Mode.SEV_ES: "Memory and register state encrypted; the host sees ciphertext.",
    Mode.SEV_SNP: "Encrypted, and the RMP refuses every host write to the page.",
}


def demo(
    out: Path = typer.Option(Path("cvm-demo"), "--out", help="Folder for the HTML report."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for a reproducible run."),
) -> None:
    """Launch a VM in each mode, attack it from the host, and show what held."""
    console = Console()
    rng = random.Random(seed)
    random_bytes = rng.randbytes if seed is not None else None
    secret = b"owner's disk key: " + (random_bytes or _urandom)(14)

    console.print("[bold]1. One host, four guests, one secret[/bold]")
    views = memory_views.launch_all(secret, random_bytes or _urandom)
    summary = Table("mode", "ASID", "guest reads", "host reads (same bytes)")
    start = -len(secret)
    for view in views:
        guest_text = view.guest_view[start : start + 16]
        host_text = view.host_view[start : start + 16]
        seen = _printable(host_text) if view.host_sees_plaintext else host_text[:8].hex() + "…"
        summary.add_row(view.mode.value, str(view.asid), _printable(guest_text), seen)
    console.print(summary)

    console.print("[bold]2. The host attacks (SEV-SNP whitepaper, Table 1, memory rows)[/bold]")
    header = ["host action", *(m.value for m in memory_attacks.MODES)]
    rows: list[list[str]] = []
    results = Table(*header)
    held = 0
    total = len(memory_attacks.ATTACKS) * len(memory_attacks.MODES)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("attacking", total=total)
        for name, (title, _) in memory_attacks.ATTACKS.items():
            row = [title]
            for mode in memory_attacks.MODES:
                progress.update(task, description=f"{name} vs {mode.value}")
                outcome = memory_attacks.run(name, mode, random_bytes or _urandom)
                matches = outcome.observed == memory_attacks.expected(name, mode)
                held += matches
                row.append(outcome.observed + ("" if matches else "*"))
                progress.advance(task)
            rows.append(row)
            results.add_row(*row)
    console.print(results)

    out.mkdir(parents=True, exist_ok=True)
    panels = [
        (f"{v.mode.value} (ASID {v.asid})", v.guest_view, v.host_view, NOTES[v.mode])
        for v in views
    ]
    report = out / "report.html"
    _write(report, html_report("cvm demo: what the host sees", panels, header, rows).encode())
    snp = views[-1]
    _write(out / "sev-snp-host-view.png", grey_png(snp.host_view, 64))
    _write(out / "plain-host-view.png", grey_png(views[0].host_view, 64))
    console.print(
        f"{held}/{total} outcomes as the threat table says. Report: [bold]{report}[/bold]"
    )
    if held != total:
        raise typer.Exit(1)


def _urandom(size: int) -> bytes:
    return os.urandom(size)


def _printable(data: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in data)


def _write(path: Path, data: bytes) -> None:
    """Write atomically: a failed write leaves the previous file intact."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
