"""``cvm attack``: the host's attacks, one at a time or all of them in every mode.

``list [--json]`` names every attack, its family, what it does and its expected outcome per
mode · ``run NAME [--mode MODE]... [--seed N] [--json]`` performs one attack against a fresh
live VM of each mode given (default: all four) · ``matrix [--family F]... [--seed N] [--json]``
performs every attack in every mode. Each cell is measured live, then everything the host can
read is scanned for any 8-byte run of any of the VM's secrets. ``run`` and ``matrix`` exit 1
if any observed outcome differs from its expectation, or a secret leaked where the mode must
protect it.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from cvm.cli.options import check_workers
from cvm.errors import UsageError
from cvm.hardware.vm import Mode

app = typer.Typer(help="The host's attacks against a live VM, per mode.", no_args_is_help=True)

AS_JSON = typer.Option(False, "--json", help="JSON output.")
SEED = typer.Option(None, "--seed", help="Seed for a reproducible run.")
LEAKS_SHOWN = 10


def _modes(names: list[str] | None) -> list[Mode]:
    from cvm.host.adversary.threat import MODES

    return [Mode.parse(name) for name in names] if names else list(MODES)


@app.command("list")
def list_attacks(as_json: bool = AS_JSON) -> None:
    """Every attack: name, family, what it does, expected outcome per mode."""
    from cvm.host.adversary.catalog import ATTACKS
    from cvm.host.adversary.threat import MODES

    if as_json:
        rows = [
            {
                "name": a.name,
                "family": a.family.value,
                "does": a.does,
                "expected": {m.value: _expected_json(a.expected(m)) for m in MODES},
            }
            for a in ATTACKS
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("attack", "family", "what the host does", *(m.value for m in MODES),
                  title=f"{len(ATTACKS)} host attacks", title_justify="left")
    for a in ATTACKS:
        table.add_row(a.name, a.family.value, a.does, *(str(a.expected(m)) for m in MODES))
    Console(width=200).print(table)


def _expected_json(expected: Any) -> dict[str, Any]:
    return {
        "verdict": expected.verdict.value,
        "mechanism": expected.mechanism.value if expected.mechanism else None,
        "why": expected.why or None,
    }


def _result_json(result: Any) -> dict[str, Any]:
    return {
        "attack": result.attack.name,
        "family": result.attack.family.value,
        "mode": result.mode.value,
        "expected": _expected_json(result.expected),
        "observed": {
            "verdict": result.observed.verdict.value,
            "mechanism": result.observed.mechanism.value if result.observed.mechanism else None,
            "detail": result.observed.detail,
        },
        "as_expected": result.as_expected,
        "leak_count": len(result.leaks),
        "leaks": [str(leak) for leak in result.leaks[:LEAKS_SHOWN]],
        "scan_must_be_clean": result.must_be_clean,
        "held": result.held,
        "seconds": round(result.seconds, 4),
    }


def exit_code(results: list[Any]) -> int:
    """0 when every outcome held (the expected one, and no secret leaked where the mode must
    protect it); 1 when any did not."""
    held = sum(r.held for r in results)
    return 0 if held == len(results) else 1


def report_lines(results: list[Any]) -> list[str]:
    """The text report: each cell held or BROKEN, its leaks, then the count held."""
    lines = []
    for r in results:
        mark = "held" if r.held else "BROKEN"
        leaks = f"; {len(r.leaks)} leak(s), first {r.leaks[0]}" if r.leaks else ""
        lines.append(f"{mark:6} {r.attack.name} [{r.mode.value}]: expected {r.expected}, "
                     f"observed {r.observed} — {r.observed.detail}{leaks}")
    lines.append(f"{sum(r.held for r in results)}/{len(results)} outcomes as expected")
    return lines


def report_json(results: list[Any]) -> dict[str, Any]:
    """The JSON report: the count held, the total, every cell."""
    return {"held": sum(r.held for r in results), "total": len(results),
            "results": [_result_json(r) for r in results]}


def _report(results: list[Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report_json(results), indent=2))
    else:
        for line in report_lines(results):
            typer.echo(line)
    code = exit_code(results)
    if code:
        raise typer.Exit(code)


def chosen_attacks(families: list[str] | None) -> list[Any]:
    """Every attack of the families named (``--family``, repeated), or every attack."""
    from cvm.host.adversary.catalog import ATTACKS
    from cvm.host.adversary.threat import Family

    known = {f.value: f for f in Family}
    wanted = set()
    for text in families or []:
        if text not in known:
            raise UsageError(f"unknown family {text!r} (choose from {', '.join(known)})")
        wanted.add(known[text])
    return [a for a in ATTACKS if not wanted or a.family in wanted]


@app.command("run")
def run(
    name: str = typer.Argument(..., help="The attack (see `cvm attack list`)."),
    mode: list[str] = typer.Option(None, "--mode", help="plain, sev, sev-es or sev-snp "
                                   "(repeat; default: all four)."),
    seed: int | None = SEED,
    as_json: bool = AS_JSON,
) -> None:
    """Perform one attack against a fresh VM of each mode."""
    from cvm.host.adversary.catalog import by_name
    from cvm.scenarios.attack_matrix import matrix as run_matrix

    chosen = by_name(name)
    _report(run_matrix([chosen], _modes(mode), seed=seed), as_json)


@app.command("matrix")
def matrix(
    family: list[str] = typer.Option(None, "--family", help="Only this family (repeat)."),
    seed: int | None = SEED,
    workers: int = typer.Option(2, "--workers", help="Processes to run the cells in."),
    as_json: bool = AS_JSON,
) -> None:
    """Every attack in every mode, measured live; exit 1 if any differs from its expectation."""
    from cvm.scenarios.attack_matrix import matrix as run_matrix

    attacks = chosen_attacks(family)
    _report(run_matrix(attacks, seed=seed, workers=check_workers(workers)), as_json)
