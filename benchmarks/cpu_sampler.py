"""Where the CPU outside the cryptography goes: a statistical profiler by part of cvm, installed
by a benchmark only (``with CpuSampler() as sampler: ...``).

Every ``interval`` seconds of wall time (``ITIMER_REAL``), the sampler looks at the Python stack
the main thread is running. (Not ``ITIMER_PROF``: on the machines cvm is measured on, a CPU-time
interval timer fires only once per scheduler tick, and while it runs ``time.process_time`` —
the clock :mod:`crypto_timer` reads — advances by ticks too.) On a machine that runs nothing
else, wall time is the process's CPU time; under load, a sample is taken when the process next
runs, which spreads the samples over its CPU time as well. A sample whose stack holds a frame of
:mod:`crypto_timer` is inside a timed or counted cryptographic call, or inside the timer's own
wrapping, and is left out: those seconds are the timer's to report. Every other sample is
charged to the innermost frame of the ``cvm`` package on the stack (third-party and standard
library code is charged to the ``cvm`` code that called it), grouped by the part of cvm that
frame belongs to (:data:`PARTS`). A signal handler runs between bytecodes, so a sample taken
during a long call into C is charged to the Python that made the call.

The result is each part's share of the samples outside the cryptography; a benchmark scales it
by the share of the CPU it measured outside the cryptography. Not part of the ``cvm`` package
(see ``timing.py``).
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from types import FrameType, TracebackType

import cvm

_CVM = str(Path(cvm.__file__).resolve().parent) + "/"
_TIMER = str(Path(__file__).resolve().parent / "crypto_timer.py")
CRYPTO = "cryptography (left to the timer)"
OUTSIDE = "outside cvm (the benchmark, the interpreter)"

# (path prefix inside src/cvm, name): the first prefix that matches names the part
PARTS: tuple[tuple[str, str], ...] = (
    ("hardware/", "emulated hardware (world switches, RMP, DRAM, engine, PSP)"),
    ("guest/svsm/", "SVSM (calls, vTPM state pages)"),
    ("guest/kernel/", "guest kernel (GHCB, sev-guest, VMPL switches)"),
    ("guest/tpm/", "guest TPM client (marshalling, sessions)"),
    ("guest/boot/", "boot stages (firmware, shim, GRUB, kernel, initramfs)"),
    ("guest/", "guest, other"),
    ("vtpm/", "vTPM engine (commands, state)"),
    ("formats/", "formats (parsing and encoding)"),
    ("wire/", "formats (parsing and encoding)"),
    ("disk/", "disk (LUKS2, dm-crypt)"),
    ("host/", "host (VMM, launch, image)"),
    ("attestation/", "relying party (verifier)"),
    ("crypto/", "crypto module, outside primitives (certificate parsing, glue)"),
    ("amd/", "AMD PKI"),
)


def part_of(filename: str) -> str | None:
    """The part of cvm a source file belongs to, or None outside the package."""
    if not filename.startswith(_CVM):
        return None
    inside = filename[len(_CVM):]
    return next((name for prefix, name in PARTS if inside.startswith(prefix)), "cvm, other")


def classify(frame: FrameType | None) -> str:
    """What one sample's stack is charged to."""
    charged: str | None = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename == _TIMER:
            return CRYPTO
        if charged is None:
            charged = part_of(filename)
        frame = frame.f_back
    return charged or OUTSIDE


class CpuSampler:
    """Samples the main thread's stack every ``interval`` seconds of wall time."""

    def __init__(self, interval: float = 0.0005) -> None:
        self.interval = interval
        self.samples: Counter[str] = Counter()
        self._previous: object = None

    def _sample(self, signum: int, frame: FrameType | None) -> None:
        self.samples[classify(frame)] += 1

    def __enter__(self) -> CpuSampler:
        self._previous = signal.signal(signal.SIGALRM, self._sample)
        signal.setitimer(signal.ITIMER_REAL, self.interval, self.interval)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, self._previous)  # type: ignore[arg-type]

    def shares_outside_crypto(self) -> dict[str, float]:
        """Each part's share of the samples outside the cryptography, largest first."""
        outside = {name: count for name, count in self.samples.items() if name != CRYPTO}
        total = sum(outside.values())
        if not total:
            return {}
        return {name: count / total
                for name, count in sorted(outside.items(), key=lambda item: -item[1])}
