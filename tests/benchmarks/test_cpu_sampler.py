"""The benchmarks' CPU sampler: what it charges a sample to."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from cpu_sampler import CRYPTO, OUTSIDE, CpuSampler, classify, part_of
from crypto_timer import CryptoTimer
from cvm.formats.luks2 import anti_forensic
from cvm.formats.tpm2.pcr_selection import PcrSelectionList


def _busy(seconds: float, work: object) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        work()  # type: ignore[operator]


def test_parts_follow_the_package_layout() -> None:
    assert part_of(anti_forensic.__file__).startswith("formats")
    assert part_of("/elsewhere/module.py") is None
    assert classify(None) == OUTSIDE


def test_samples_are_charged_to_the_innermost_cvm_code() -> None:
    # PcrSelectionList.of runs Python in cvm/formats: the samples land there, not here
    with CpuSampler(interval=0.001) as sampler:
        _busy(0.3, lambda: PcrSelectionList.of("sha256", [0, 1, 2, 3, 4, 5, 6, 7]))
    shares = sampler.shares_outside_crypto()
    assert sum(sampler.samples.values()) > 50
    assert max(shares, key=shares.__getitem__) == "formats (parsing and encoding)"


def test_samples_inside_the_timer_are_left_to_it() -> None:
    with CryptoTimer() as timer, CpuSampler(interval=0.001) as sampler:
        _busy(0.3, lambda: timer.run("work", lambda: hashlib.sha256(bytes(1 << 16)).digest()))
    assert sampler.samples[CRYPTO] > 0.8 * sum(sampler.samples.values())
    assert CRYPTO not in sampler.shares_outside_crypto()


def test_the_timers_clock_keeps_its_resolution_while_sampling() -> None:
    seen = set()
    with CpuSampler():
        start = time.process_time()
        while time.process_time() - start < 0.05:
            seen.add(time.process_time())
    assert len(seen) > 100  # a tick-based clock would give a handful of values


def test_the_signal_handler_is_restored() -> None:
    import signal

    before = signal.getsignal(signal.SIGALRM)
    with CpuSampler():
        pass
    assert signal.getsignal(signal.SIGALRM) == before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
