"""One confidential VM end to end: image build, boot (launch to workload running), the matrix.

Usage: ``python benchmarks/boot.py [--json] [--boots 3] [--crypto-boots 6] [--skip-matrix]
[--workers 2]``

Measured, in one process:

* ``build``: :func:`cvm.image.bundle.build_image` with its defaults (``--chain uki``, sev-snp),
  once with cryptsetup's default recovery-keyslot KDF (argon2id, calibrated) and once with
  ``--kdf-cost fast``; each step's share of the fast build;
* ``boot``: :func:`cvm.guest.run.boot_bundle` in SEV-SNP mode (best of ``--boots``), launch to
  workload running, with each phase's share (launch, SVSM, ESP, boot chain, initramfs,
  workload) and the keyslot's share: the token keyslot's KDF (PBKDF2-SHA512) and the whole
  keyslot open (KDF, area decryption, AF merge), timed where the initramfs calls them;
* ``boot_crypto``: ``--crypto-boots`` more SEV-SNP boots, launch to workload running (the trace
  the host reads afterwards left out; ``trace_cpu_share`` is what it adds), untimed and as many
  timed, alternating
  (the fastest of each: on a shared machine the other processes' load only ever adds), in CPU time,
  with every cryptographic primitive timed where it is called (:mod:`crypto_timer`, installed
  by this benchmark only; each counted call less the measuring's own cost, calibrated in the
  same run; the boot's many small hash calls priced at their cost measured in-process, see
  :mod:`crypto_timer`): the share of the untimed boot's CPU spent in each kind of primitive the
  architecture requires (the keyslot's PBKDF2 and AF splitter, AES-XTS of the keyslot area and
  the root's sectors, the memory engine's AES-XEX, SHA of the measurements, RSA/ECC of Secure
  Boot, the vTPM and the report, the vTPM's KDFs and session ciphers; the two constructions cvm
  runs in Python or numpy are timed whole, their primitives' own share given apart:
  ``memory_engine_block_cipher_share``, ``af_splitter_hash_share``), and ``python_share``:
  everything else,
  split by the part of cvm that spends it (``python_by_part``: :mod:`cpu_sampler`, a statistical
  profiler run over the same timed boots, the samples inside the cryptography left out);
* ``matrix``: every attack in every mode (:func:`cvm.scenarios.attack_matrix.matrix`), wall
  time with ``--workers`` processes, and the sum of the cells' own times.

Baselines, measured in the same run: the vendor's roots (derived once per process and included
in the first boot of a fresh process, so they are timed apart: ``vendor_roots_s``) and one bare
PBKDF2-SHA512 of 1000 iterations with ``hashlib`` (the KDF the token keyslot requires), which
every ratio below is against: ``boot_over_kdf`` says how many keyslot KDFs one boot costs.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cpu_sampler import CpuSampler
from crypto_timer import CryptoTimer
from cvm.amd.pki import default_vendor
from cvm.disk import keyslot
from cvm.guest.boot import initramfs
from cvm.guest.run import PRODUCT, boot_bundle
from cvm.guest.vm import GuestVm
from cvm.hardware.vm import Mode
from cvm.image.bundle import ImageSpec, build_image
from cvm.scenarios.attack_matrix import matrix
from timing import argument_parser, best_seconds, print_figures

TOKEN_KDF_ITERATIONS = 1000


class _Timer:
    """Adds up the time spent in one function while it is wrapped."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, function):  # type: ignore[no-untyped-def]
        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return timed


@contextlib.contextmanager
def _until_the_workload() -> Iterator[None]:
    """Boots that end once the workload has run: what the host reads afterwards for the trace
    (the vTPM's PCRs, the event log replayed from guest memory) is not launch to workload
    running, and is left out of the breakdown."""
    original = GuestVm.finish
    GuestVm.finish = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        GuestVm.finish = original  # type: ignore[method-assign]


def _crypto_breakdown(folder: Path, seeds: range) -> dict[str, object]:
    """SEV-SNP boots, launch to workload running, with every cryptographic primitive timed
    where it is called (the fastest of ``seeds``), in CPU time (a shared machine's other
    processes do not skew it): each category's share of the best untimed boot's CPU (each
    counted call less the measuring's own cost), and the share of everything else — the Python
    around the cryptography. ``trace_cpu_share``: what the trace after the workload adds."""
    untimed = whole = float("inf")
    best: tuple[float, CryptoTimer] | None = None
    sampler = CpuSampler()
    for seed in seeds:  # untimed and timed boots alternate: a change in load hits both
        whole = min(whole, _cpu_boot(folder, seed))
        with _until_the_workload():
            untimed = min(untimed, _cpu_boot(folder, seed))
            with CryptoTimer() as timer, sampler:
                start = time.process_time()
                trace = boot_bundle(folder, Mode.SEV_SNP, random=random.Random(seed).randbytes)
                seconds = time.process_time() - start
        if trace.refused is not None or not trace.workload_ok or not trace.launch_accepted:
            raise SystemExit(f"the benchmark boot failed: {trace.refused}")
        if best is None or seconds < best[0]:
            best = (seconds, timer)
    assert best is not None
    seconds, timer = best
    corrected = timer.corrected()
    crypto = sum(corrected.values())
    shares = {name: round(value / untimed, 4)
              for name, value in sorted(corrected.items(), key=lambda item: -item[1])}
    python = 1 - crypto / untimed
    by_part = {name: round(python * share, 4)
               for name, share in sampler.shares_outside_crypto().items()}
    return {"untimed_boot_cpu_s": round(untimed, 4), "timed_boot_cpu_s": round(seconds, 4),
            "trace_cpu_share": round(max(0.0, whole - untimed) / whole, 4),
            "crypto_cpu_s": round(crypto, 4), "crypto_share": round(crypto / untimed, 4),
            "python_share": round(1 - crypto / untimed, 4),
            "crypto_share_uncorrected_of_timed_boot": round(timer.total / seconds, 4),
            "by_primitive": shares, "python_by_part": by_part,
            "python_samples": sum(sampler.samples.values()), "calls": dict(timer.calls),
            "small_hash_calls_priced": sum(timer.small_hashes.values()),
            "memory_engine_block_cipher_share": round(
                timer.memory_block_cipher_seconds() / untimed, 4),
            "af_splitter_hash_share": round(timer.af_hash_seconds() / untimed, 4)}


def _cpu_boot(folder: Path, seed: int) -> float:
    """The CPU time of one SEV-SNP boot."""
    start = time.process_time()
    boot_bundle(folder, Mode.SEV_SNP, random=random.Random(seed).randbytes)
    return time.process_time() - start


def _boot(folder: Path, seed: int) -> tuple[float, dict[str, float], float, float]:
    """One SEV-SNP boot: wall time, phases, keyslot KDF time, whole keyslot-open time."""
    kdf, slot = _Timer(), _Timer()
    original_derive, original_open = keyslot._derive, initramfs.open_keyslot
    keyslot._derive = kdf.wrap(original_derive)  # type: ignore[assignment]
    initramfs.open_keyslot = slot.wrap(original_open)  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        trace = boot_bundle(folder, Mode.SEV_SNP, random=random.Random(seed).randbytes)
        seconds = time.perf_counter() - start
    finally:
        keyslot._derive, initramfs.open_keyslot = original_derive, original_open
    if not trace.ok:
        raise SystemExit(f"the benchmark boot failed: {trace.refused}")
    return seconds, dict(trace.timings), kdf.seconds, slot.seconds


def run(boots: int, skip_matrix: bool, workers: int, crypto_boots: int = 6
        ) -> dict[str, object]:
    figures: dict[str, object] = {}
    baseline = best_seconds(
        lambda: hashlib.pbkdf2_hmac("sha512", b"token secret", b"salt" * 8,
                                    TOKEN_KDF_ITERATIONS), repeat=5)
    figures["baseline_pbkdf2_sha512_1000_ms"] = round(baseline * 1e3, 3)
    start = time.perf_counter()
    default_vendor(PRODUCT)
    figures["vendor_roots_s"] = round(time.perf_counter() - start, 3)
    with tempfile.TemporaryDirectory(prefix="cvm-bench-") as scratch:
        root = Path(scratch)
        start = time.perf_counter()
        build_image(root / "default-kdf", ImageSpec(), random=random.Random(1).randbytes)
        figures["build_default_kdf_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        fast = build_image(root / "fast-kdf", ImageSpec(kdf_cost="fast"),
                           random=random.Random(2).randbytes)
        build = time.perf_counter() - start
        figures["build_fast_kdf_s"] = round(build, 3)
        figures["build_steps_share"] = {k: round(v / build, 3) for k, v in fast.timings.items()}
        runs = [_boot(fast.out, seed) for seed in range(boots)]
        seconds, phases, kdf, slot = min(runs, key=lambda r: r[0])
        figures["boot_snp_s"] = round(seconds, 3)
        figures["boot_over_kdf"] = round(seconds / baseline, 1)
        figures["boot_phase_share"] = {k: round(v / seconds, 3) for k, v in phases.items()}
        figures["keyslot_kdf_share"] = round(kdf / seconds, 4)
        figures["keyslot_open_share"] = round(slot / seconds, 4)
        figures["boot_crypto"] = _crypto_breakdown(fast.out, range(boots, boots + crypto_boots))
    if not skip_matrix:
        start = time.perf_counter()
        results = matrix(seed=3, workers=workers)
        wall = time.perf_counter() - start
        figures["matrix_cells"] = len(results)
        figures["matrix_held"] = sum(r.held for r in results)
        figures["matrix_wall_s"] = round(wall, 2)
        figures["matrix_cells_sum_s"] = round(sum(r.seconds for r in results), 2)
        figures["matrix_over_one_boot"] = round(wall / seconds, 1)
    return figures


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--boots", type=int, default=3, help="boots to take the best of")
    parser.add_argument("--crypto-boots", type=int, default=6,
                        help="boots (untimed and timed) for the crypto breakdown")
    parser.add_argument("--skip-matrix", action="store_true", help="do not run the matrix")
    parser.add_argument("--workers", type=int, default=2, help="processes for the matrix")
    args = parser.parse_args()
    print_figures(run(args.boots, args.skip_matrix, args.workers, args.crypto_boots),
                  as_json=args.json)


if __name__ == "__main__":
    main()
