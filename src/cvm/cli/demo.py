"""``cvm demo``: the main job, one story.

The owner builds an image (``cvm image build`` with its defaults; the recovery keyslot's KDF
cheap, as ``--kdf-cost fast``; with ``--seed N`` as ``cvm image build --seed N`` builds it, so
the same seed builds the same bytes: :func:`demo_image`); the host boots it as an SEV-SNP VM —
SVSM and vTPM, Secure Boot and measured boot, the initramfs unsealing the disk key, the
workload on the encrypted root — and the chain of trust is shown; one host runs a VM of each
mode and the same secret page is shown as its guest and as the host read it; then every host
attack runs in every mode, live, with a progress bar; one summary line ends it. It writes
``OUT/report.html`` and exits 1 if the boot failed or any outcome differs from its expectation.
"""

from __future__ import annotations

import errno
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cvm import __version__
from cvm.cli.demo_verdict import (
    all_held,
    boot_held,
    chosen_attacks,
    exit_code,
    scan,
    scan_line,
    verdict_line,
)
from cvm.cli.options import check_workers
from cvm.files import write_output
from cvm.guest.run import boot_bundle
from cvm.hardware.vm import Mode
from cvm.host.adversary.threat import MODES, Attack
from cvm.image.build_epoch import VARIABLE, parse_source_date_epoch
from cvm.image.bundle import BuiltImage, ImageSpec, build_image
from cvm.scenarios import attack_matrix, memory_views
from cvm.scenarios.picture import grey_png
from cvm.scenarios.report import Panel, demo_report

NOTES = {
    Mode.PLAIN: "No encryption: the host reads the guest's page as the guest wrote it.",
    Mode.SEV: "The engine encrypts the page with the guest's key: the host sees ciphertext.",
    Mode.SEV_ES: "Memory and register state encrypted; the host sees ciphertext.",
    Mode.SEV_SNP: "Encrypted, and the RMP refuses every host write to the page.",
}
RandomBytes = Callable[[int], bytes]


def demo(
    out: Path = typer.Option(Path("cvm-demo"), "--out", help="Folder for the HTML report."),
    seed: int | None = typer.Option(None, "--seed",
                                    help="Seed for a reproducible run: the image is built as "
                                         "cvm image build --seed builds it (the same seed, "
                                         "the same bytes; keys from the seed: demos only)."),
    workers: int = typer.Option(2, "--workers", help="Processes for the attack matrix."),
    family: list[str] = typer.Option(None, "--family", help="Only these attack families "
                                     "(repeat; default: all)."),
    kbs: bool = typer.Option(False, "--kbs", help="The story with a key broker on loopback: "
                             "the SVSM gets the vTPM state key from cvm kbs serve."),
) -> None:
    """Build an image, boot it as an SEV-SNP VM, attack it from the host, and report."""
    if kbs:  # docs/kbs.md, "Booting through the broker"
        from cvm.cli.demo_kbs import kbs_demo

        raise typer.Exit(kbs_demo(random.Random(seed).randbytes if seed is not None
                                  else os.urandom, seed))
    started = time.perf_counter()
    attacks = chosen_attacks(family)
    check_workers(workers)
    parse_source_date_epoch(os.environ.get(VARIABLE))  # refused before the folder is made
    report_folder(out)
    random_bytes: RandomBytes = random.Random(seed).randbytes if seed is not None else os.urandom
    console = Console()
    console.print("[bold]1. The owner builds an image; the host boots it as an SEV-SNP VM[/bold]")
    with tempfile.TemporaryDirectory(prefix="cvm-demo-") as scratch:
        with console.status("building the image (keys, signed boot chain, LUKS2 root, vTPM)"):
            built = demo_image(Path(scratch) / "image", seed)
        with console.status("launching and booting it"):
            trace = boot_bundle(built.out, Mode.SEV_SNP, random=random_bytes)
        leaks, scanned = scan(trace)
    chain = trace.render()
    console.print(chain, highlight=False, markup=False)
    console.print(scan_line(leaks, scanned))

    console.print("[bold]2. One host, a VM of each mode, one secret page[/bold]")
    secret = b"owner's secret: " + random_bytes(16)
    views = memory_views.launch_all(secret, random_bytes)
    pages = Table("mode", "ASID", "guest reads", "host reads", title_justify="left")
    start = -len(secret)
    for view in views:
        host_text = view.host_view[start : start + 16]
        shown = _printable(host_text) if view.host_sees_plaintext else host_text.hex()
        pages.add_row(view.mode.value, str(view.asid),
                      _printable(view.guest_view[start : start + 16]), shown)
    console.print(pages)

    console.print("[bold]3. The host attacks: every attack, every mode, live[/bold]")
    results = _matrix(console, attacks, seed, workers)
    _print_matrix(console, results)

    booted = boot_held(trace.ok, leaks)
    verdict = verdict_line(booted, results, time.perf_counter() - started)
    panels = [Panel(f"{v.mode.value} (ASID {v.asid})", v.guest_view, v.host_view, NOTES[v.mode])
              for v in views]
    steps = [(step.actor, step.verb, step.subject, "" if step.pcr is None else str(step.pcr),
              step.digest) for step in trace.steps]
    lines = chain.splitlines()
    outcome = " ".join(line for line in lines if line.startswith(("OK:", "REFUSED", "boot time")))
    page = demo_report(verdict=verdict, held=all_held(booted, results), seed=seed,
                       version=__version__, steps=steps, outcome=outcome, panels=panels,
                       results=results)
    report = write_report(out, page, views)
    console.print(f"{verdict}. Report: [bold]{report}[/bold]")
    code = exit_code(booted, results)
    if code:
        raise typer.Exit(code)


def demo_image(out: Path, seed: int | None) -> BuiltImage:
    """The demo's image in ``out``: ``cvm image build`` with its defaults and ``--kdf-cost
    fast``, seeded as ``--seed`` seeds it (keys, disk, every file from the seed; time stamps
    from ``SOURCE_DATE_EPOCH``, else 2025-01-01), or fresh from the operating system."""
    spec = ImageSpec(kdf_cost="fast", seed=seed,
                     source_date_epoch=parse_source_date_epoch(os.environ.get(VARIABLE)))
    return build_image(out, spec)


def _matrix(console: Console, attacks: list[Attack], seed: int | None, workers: int
            ) -> list[attack_matrix.Result]:
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    total = len(attacks) * len(MODES)
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("building the attack images", total=total)

        def advance(attack: object, mode: Mode) -> None:
            name = getattr(attack, "name", "")
            progress.update(task, description=f"{name} vs {mode.value}", advance=1)

        return attack_matrix.matrix(attacks, seed=seed, progress=advance, workers=workers)


def _print_matrix(console: Console, results: list[attack_matrix.Result]) -> None:
    rows: dict[str, list[str]] = {}
    for result in results:
        text = str(result.observed).replace("blocked by ", "")
        cell = text if result.held else f"[red]{text} (expected {result.expected})[/red]"
        rows.setdefault(result.attack.name, []).append(cell)
    # every attack name and every word of an outcome whole on an 80-column console or log: the
    # outcomes wrap between words, in columns as wide as their longest word, with one space and
    # no rule between columns
    table = Table(title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True,
                  title="observed outcome (red: differs from the expectation or leaked)")
    table.add_column("attack", no_wrap=True, min_width=max(map(len, rows), default=6))
    for index, mode in enumerate(MODES):
        words = [word for cells in rows.values() if index < len(cells)
                 for word in Text.from_markup(cells[index]).plain.split()]
        table.add_column(mode.value, min_width=max(map(len, words), default=len(mode.value)))
    for name, cells in rows.items():
        table.add_row(name, *cells)
    console.print(table)


def report_folder(out: Path) -> None:
    """``--out``, made (with its parents) before the demo starts, so a path that cannot hold the
    report is refused at once, not after the matrix has run: the OS's error, naming it."""
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot write the report into it", str(out))


def _printable(data: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in data)


def write_report(out: Path, page: str, views: list[memory_views.PageViews]) -> Path:
    """The report page and the two host views as pictures in ``out``, each file whole: a
    failed write leaves the previous file as it was. Returns the page's path."""
    report = out / "report.html"
    write_output(report, page.encode())
    write_output(out / "sev-snp-host-view.png", grey_png(views[-1].host_view, 64))
    write_output(out / "plain-host-view.png", grey_png(views[0].host_view, 64))
    return report
