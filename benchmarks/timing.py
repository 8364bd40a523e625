"""Timers and reporting shared by the benchmarks: best-of and median timing, one way to print.

Every benchmark is a script run from the project root (``uv run python benchmarks/<name>.py``
``[--json]``). Python puts a script's own folder first on ``sys.path``, so the benchmarks
``import timing`` and find this module; it is not part of the ``cvm`` package.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple


class Median(NamedTuple):
    """The median wall-clock time of one run, and how many runs it is the median of."""

    seconds: float
    samples: int

    @property
    def us(self) -> float:
        return self.seconds * 1e6


def best_seconds(function: Callable[[], object], repeat: int = 3) -> float:
    """The shortest of ``repeat`` wall-clock runs of ``function``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def median(function: Callable[[], object], *, seconds: float = 0.0, at_least: int = 1) -> Median:
    """Run ``function`` for ``seconds`` of wall-clock time and at least ``at_least`` times;
    the median run (timed with the nanosecond counter)."""
    samples: list[int] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < at_least or time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        function()
        samples.append(time.perf_counter_ns() - start)
    return Median(statistics.median(samples) / 1e9, len(samples))


def argument_parser(description: str | None) -> argparse.ArgumentParser:
    """The command line of a benchmark: the first line of its docstring and ``--json``; the
    benchmark adds its own size and time options."""
    parser = argparse.ArgumentParser(description=(description or "").partition("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def print_figures(
    figures: Mapping[str, object], *, as_json: bool, line: str = "{name}: {value}"
) -> None:
    """Print ``figures`` as one indented JSON object, or one ``line`` (a format string with
    ``name`` and ``value``) per figure."""
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    for name, value in figures.items():
        print(line.format(name=name, value=value))
