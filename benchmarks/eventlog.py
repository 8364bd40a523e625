"""Event-log throughput: parse + decode + replay, and a measured boot writing log and PCRs.

Usage: ``python benchmarks/eventlog.py [--json] [--seconds 1]``

Workload: the real boot log of ``../shared/vectors/realboot/eventlog.bin`` (50 events, sha1 and
sha256) repeated to 2,000 events. Baseline, measured in the same process: the bare hashing a
replay cannot avoid, ``hashlib`` sha1 and sha256 of ``PCR || digest`` once per event, with the
digests already in a list. Figures are medians:

* parse: ``EventLog.parse`` (strict, every record);
* decode: ``decode_event_data`` of every record (the work of ``cvm eventlog show``);
* replay: ``replay`` of the parsed log into both banks;
* measure: ``MeasuredBoot.measure`` of 2,000 events into a software PCR bank and the log.

Goal: replay within 6x the bare hashing baseline (the rest is per-event bookkeeping in Python).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from cvm.firmware.measured_boot import MeasuredBoot
from cvm.firmware.pcr_bank import SoftwarePcrBank
from cvm.formats.tcg.event_data import decode_event_data
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.replay import replay

VECTOR = Path(__file__).resolve().parent.parent.parent / "shared/vectors/realboot/eventlog.bin"
EVENTS = 2000


def _median_s(function: Callable[[], object], seconds: float) -> float:
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    real = EventLog.parse(VECTOR.read_bytes())
    events = (real.events * (EVENTS // len(real.events) + 1))[:EVENTS]
    log = EventLog(real.spec_id, events)
    data = log.to_bytes()
    digests = [(e.digest(0x0004) or b"", e.digest(0x000B) or b"") for e in events]

    def baseline() -> None:
        pcr1, pcr256 = bytes(20), bytes(32)
        for sha1, sha256 in digests:
            pcr1 = hashlib.sha1(pcr1 + sha1).digest()
            pcr256 = hashlib.sha256(pcr256 + sha256).digest()

    def decode() -> None:
        for event in log.events:
            decode_event_data(event.event_type, event.event)

    def measure() -> None:
        boot = MeasuredBoot(SoftwarePcrBank(("sha1", "sha256")))
        for event in events:
            boot.measure(event.pcr_index, EventType.EV_IPL, event.event)

    timings = {
        "baseline_hashing": _median_s(baseline, args.seconds),
        "parse": _median_s(lambda: EventLog.parse(data), args.seconds),
        "decode": _median_s(decode, args.seconds),
        "replay": _median_s(lambda: replay(log), args.seconds),
        "measure": _median_s(measure, args.seconds),
    }
    figures: dict[str, float] = {}
    for name, seconds in timings.items():
        figures[f"{name}_events_per_s"] = EVENTS / seconds
        if name != "baseline_hashing":
            figures[f"{name}_vs_baseline"] = seconds / timings["baseline_hashing"]
    if args.json:
        print(json.dumps({"events": EVENTS, "log_bytes": len(data), **figures}, indent=2))
        return
    for key, value in figures.items():
        print(f"{key:32s} {value:14.1f}")


if __name__ == "__main__":
    main()
