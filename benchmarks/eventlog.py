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

import hashlib
from pathlib import Path

from cvm.formats.tcg.event_data import decode_event_data
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.replay import replay
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from timing import argument_parser, median, print_figures

VECTOR = Path(__file__).resolve().parent.parent.parent / "shared/vectors/realboot/eventlog.bin"
EVENTS = 2000


def main() -> None:
    parser = argument_parser(__doc__)
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
        name: median(function, seconds=args.seconds, at_least=5).seconds
        for name, function in (
            ("baseline_hashing", baseline), ("parse", lambda: EventLog.parse(data)),
            ("decode", decode), ("replay", lambda: replay(log)), ("measure", measure),
        )
    }
    figures: dict[str, float] = {}
    for name, seconds in timings.items():
        figures[f"{name}_events_per_s"] = EVENTS / seconds
        if name != "baseline_hashing":
            figures[f"{name}_vs_baseline"] = seconds / timings["baseline_hashing"]
    shown = {"events": EVENTS, "log_bytes": len(data), **figures} if args.json else figures
    print_figures(shown, as_json=args.json, line="{name:32s} {value:14.1f}")


if __name__ == "__main__":
    main()
