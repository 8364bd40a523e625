"""Fetching the kernel's package from the Debian cache: the first fetch of a process against
every later one.

Usage: ``python benchmarks/debian_fetch.py [--json] [--runs 3] [--cache DIR]``

A ``--target qemu`` build fetches its packages from the cache (``cvm.image.debian_packages``):
each fetch reads the ``.deb`` and checks its SHA256 against apt's index, works out the package's
file list from those bytes (``dpkg-deb --fsys-tarfile``, every file hashed), and checks the
extracted folder against that list. The list depends on the ``.deb``'s bytes alone and is kept
per process under their SHA256, so only the first fetch of a process pays for it.

The baseline, measured in the same process, is a first fetch (the kept lists emptied before
each run): what every fetch cost before the lists were kept. The figure is a later fetch of the
same package; each is the median of ``--runs`` runs, the two interleaved. The parts of a first
fetch are given apart: the ``.deb``'s check, the file list, the folder's check. The cache must
hold the kernel's package (a ``--target qemu`` build, or the tests, fetch it; default: cvm's
cache, ``$XDG_CACHE_HOME/cvm/debian``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from cvm.image import debian_packages
from cvm.image.debian_packages import default_cache, fetch, kernel_package
from timing import argument_parser, print_figures


def _seconds(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run(cache: Path, runs: int) -> dict[str, object]:
    package = kernel_package(cache)
    fetch(cache, package)  # extracted and checked once, so every run below reuses the folder
    first: list[float] = []
    later: list[float] = []
    parts: dict[str, list[float]] = {"deb_check": [], "file_list": [], "folder_check": []}
    files: dict[str, debian_packages.FileDigest] = {}
    for _ in range(runs):
        debian_packages._FILE_LISTS.clear()
        first.append(_seconds(lambda: fetch(cache, package)))
        later.append(_seconds(lambda: fetch(cache, package)))
        debian_packages._FILE_LISTS.clear()
        deb = debian_packages.verified_deb(cache, package)
        parts["deb_check"].append(
            _seconds(lambda: debian_packages.verified_deb(cache, package)))
        start = time.perf_counter()
        files = debian_packages.file_digests(deb)
        parts["file_list"].append(time.perf_counter() - start)
        start = time.perf_counter()
        debian_packages.tree_matches(cache / f"x-{package}", files)
        parts["folder_check"].append(time.perf_counter() - start)
    baseline, figure = statistics.median(first), statistics.median(later)
    return {
        "package": package,
        "files": len(files),
        "baseline_first_fetch_s": round(baseline, 3),
        "later_fetch_s": round(figure, 3),
        "first_over_later": round(baseline / figure, 2),
        "first_fetch_parts_s": {name: round(statistics.median(values), 3)
                                for name, values in parts.items()},
    }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs of each (median)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="the Debian package cache (default: cvm's)")
    args = parser.parse_args()
    print_figures(run(args.cache or default_cache(), args.runs), as_json=args.json)


if __name__ == "__main__":
    main()
