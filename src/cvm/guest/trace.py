"""The trace of one VM run: the chain of trust as it happened — what was verified, measured,
extended, unsealed, and by whom — with the PCRs the vTPM holds, the replay of the event log the
firmware left in guest memory, and the owner's prediction beside them.

The trace holds no secret: digests, names, counts and outcomes only. It prints as a readable
chain (:meth:`VmTrace.render`) and as JSON (:meth:`VmTrace.to_json`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cvm.errors import CvmError, FormatError
from cvm.formats.tcg.event_data import decode_event_data
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType, event_type_name
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.guest.boot.initramfs import RootOpened, WorkloadResult

Pcrs = Mapping[str, Mapping[int, bytes]]
SUBJECT_WIDTH = 72


@dataclass(frozen=True)
class TraceStep:
    """One link of the chain: ``actor`` ``verb`` ``subject`` (``pcr`` when it was extended)."""

    actor: str
    verb: str
    subject: str
    pcr: int | None = None
    digest: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"actor": self.actor, "verb": self.verb, "subject": self.subject}
        if self.pcr is not None:
            out["pcr"] = self.pcr
            out["sha256"] = self.digest
        return out

    def line(self) -> str:
        where = f" → PCR {self.pcr}" if self.pcr is not None else ""
        subject = self.subject if len(self.subject) <= SUBJECT_WIDTH else (
            self.subject[:SUBJECT_WIDTH - 1] + "…")
        return f"{self.actor:>13}  {self.verb:<9} {subject}{where}"


def _actor(event: PcrEvent) -> str:
    kind = event.event_type
    if event.pcr_index == 11 or (kind == EventType.EV_EVENT_TAG and event.pcr_index == 9):
        return "kernel stub"
    if event.pcr_index in (8, 9) and kind == EventType.EV_IPL:
        return "GRUB"
    if kind == EventType.EV_EFI_VARIABLE_AUTHORITY and event.pcr_index == 7:
        return "firmware/shim"
    return "firmware"


def _verb(event: PcrEvent) -> str:
    if event.event_type == EventType.EV_EFI_VARIABLE_AUTHORITY:
        return "verified"
    if event.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION:
        return "loaded"
    return "measured"


def step_of(event: PcrEvent) -> TraceStep:
    """The trace step of one event-log record."""
    try:
        text = decode_event_data(event.event_type, event.event).describe()
    except (FormatError, ValueError):
        text = f"{len(event.event)} bytes"
    if event.event_type == EventType.EV_EFI_VARIABLE_AUTHORITY:
        text = f"an image against {text}"
    subject = f"{event_type_name(event.event_type)}: {' '.join(text.split())}"
    digest = next((d.hex() for alg, d in event.digests if alg == 0x000B), "")
    return TraceStep(_actor(event), _verb(event), subject, event.pcr_index, digest)


def steps_from_log(log: EventLog) -> list[TraceStep]:
    """One step per measured event (EV_NO_ACTION records extend nothing and are skipped)."""
    return [step_of(e) for e in log.events if e.event_type != EventType.EV_NO_ACTION]


def _hex_pcrs(pcrs: Pcrs) -> dict[str, dict[str, str]]:
    return {bank: {str(pcr): value.hex() for pcr, value in sorted(values.items())}
            for bank, values in pcrs.items()}


def compare_pcrs(predicted: Pcrs, live: Pcrs, replayed: Pcrs, bank: str
                 ) -> dict[int, tuple[bool, bool]]:
    """For each predicted PCR of ``bank``: (vTPM equals prediction, vTPM equals replay). A PCR
    the vTPM did not give (a trace never read) equals nothing."""
    values, replay = live.get(bank, {}), replayed.get(bank, {})
    return {pcr: (pcr in values and values[pcr] == value,
                  pcr in values and values[pcr] == replay.get(pcr))
            for pcr, value in sorted(predicted.get(bank, {}).items())}


def pcrs_match(predicted: Pcrs, live: Pcrs, replayed: Pcrs) -> bool:
    """Every predicted PCR of every bank equals the vTPM's and the replayed log's, and at least
    one PCR was predicted (a prediction without a PCR compares nothing, and proves nothing)."""
    pairs = [pair for bank in predicted
             for pair in compare_pcrs(predicted, live, replayed, bank).values()]
    return bool(pairs) and all(same for pair in pairs for same in pair)


def workload_round_trip(workload: WorkloadResult | None) -> bool:
    """The workload ran and its data came back equal."""
    return workload is not None and workload.round_trip


def failures(trace: VmTrace) -> list[str]:
    """Why the run is not what the owner predicted, one reason each; empty when it is."""
    found: list[str] = []
    if trace.refused is not None:
        found.append(f"refused at {trace.refused[0]}")
    if trace.launch_accepted is False:
        found.append("the launch measurement differs from the prediction")
    if not any(trace.predicted.values()):
        found.append("no PCR was predicted")
    for bank in sorted(trace.predicted):
        compared = compare_pcrs(trace.predicted, trace.pcrs, trace.replayed, bank)
        live = trace.pcrs.get(bank, {})
        for pcr, (predicted, replayed) in compared.items():
            if pcr not in live:
                found.append(f"{bank} PCR {pcr} was not read from the vTPM")
                continue
            if not predicted:
                found.append(f"{bank} PCR {pcr} differs from the prediction")
            if not replayed:
                found.append(f"{bank} PCR {pcr} differs from the replayed log")
    if trace.workload is None:
        found.append("the workload did not run")
    elif not trace.workload.round_trip:
        found.append("the workload's data did not round-trip")
    return found


@dataclass
class VmTrace:
    """One run of a VM: the steps, the PCRs three ways, and how it ended."""

    mode: str
    vcpus: int
    steps: list[TraceStep] = field(default_factory=list)
    stages: tuple[str, ...] = ()
    launch_measurement: bytes | None = None
    predicted_measurement: bytes | None = None
    launch_accepted: bool | None = None  # None: nothing measured (plain)
    pcrs: dict[str, dict[int, bytes]] = field(default_factory=dict)
    replayed: dict[str, dict[int, bytes]] = field(default_factory=dict)
    predicted: dict[str, dict[int, bytes]] = field(default_factory=dict)
    event_log: bytes = b""
    refused: tuple[str, CvmError] | None = None
    root: RootOpened | None = None
    workload: WorkloadResult | None = None
    extends: int = 0
    svsm_calls: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    host: Any = None  # the host's Hypervisor (for attacks and scans), never serialised
    guest: Any = None  # the host's record of the VM
    run: Any = None  # the host's side of the run (cvm.host.vm_run.HostRun)
    vm: Any = None  # the guest itself (cvm.guest.vm.GuestVm), for tests that act as the guest
    secrets: Callable[[], dict[str, bytes]] = field(default=lambda: {})

    def add(self, actor: str, verb: str, subject: str) -> None:
        self.steps.append(TraceStep(actor, verb, subject))

    # The properties below delegate to plain functions (which mutation testing reaches).
    @property
    def unsealed(self) -> bool:
        return self.root is not None

    @property
    def workload_ok(self) -> bool:
        return workload_round_trip(self.workload)

    def compared(self, bank: str = "sha256") -> dict[int, tuple[bool, bool]]:
        """For each predicted PCR of ``bank``: (vTPM equals prediction, vTPM equals replay)."""
        return compare_pcrs(self.predicted, self.pcrs, self.replayed, bank)

    @property
    def pcrs_match(self) -> bool:
        """Every predicted PCR of every bank equals the vTPM's and the replayed log's."""
        return pcrs_match(self.predicted, self.pcrs, self.replayed)

    @property
    def ok(self) -> bool:
        """Nothing refused, the launch not rejected, every PCR as predicted, the workload's
        data round-tripped."""
        return not failures(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "vcpus": self.vcpus, "ok": self.ok, "stages": list(self.stages),
            "launch_measurement": self.launch_measurement.hex() if self.launch_measurement
            else None,
            "predicted_measurement": self.predicted_measurement.hex()
            if self.predicted_measurement else None,
            "launch_accepted": self.launch_accepted,
            "steps": [s.to_json() for s in self.steps],
            "pcrs": _hex_pcrs(self.pcrs), "replayed": _hex_pcrs(self.replayed),
            "predicted": _hex_pcrs(self.predicted),
            "pcrs_match_prediction_and_replay": self.pcrs_match,
            "failures": failures(self),
            "refused": None if self.refused is None else {
                "stage": self.refused[0], "error": type(self.refused[1]).__name__,
                "message": str(self.refused[1])},
            "unsealed": self.unsealed,
            "root": None if self.root is None else self.root.__dict__ | {
                "pcrs": list(self.root.pcrs), "files": list(self.root.files)},
            "workload": None if self.workload is None else self.workload.__dict__,
            "vtpm_extends": self.extends, "svsm_calls": self.svsm_calls,
            "timings_s": {k: round(v, 6) for k, v in self.timings.items()},
        }

    def render(self) -> str:
        """The chain of trust, one step a line, then the PCR comparison and the outcome."""
        lines = [f"cvm vm run: {self.mode}, {self.vcpus} vCPU(s)", ""]
        lines += [step.line() for step in self.steps]
        where = (f"through {self.svsm_calls} SVSM calls" if self.svsm_calls
                 else "through the host's vTPM device")
        lines += ["", f"{self.extends} TPM2_PCR_Extend commands reached the vTPM {where}", ""]
        for bank in sorted(self.predicted):
            live = self.pcrs.get(bank, {})
            for pcr, (predicted, replayed) in self.compared(bank).items():
                if pcr not in live:
                    lines.append(f"  {bank} PCR {pcr:>2} not read from the vTPM")
                    continue
                value = live[pcr].hex()[:16]
                lines.append(f"  {bank} PCR {pcr:>2} {value}…  prediction "
                             f"{'equal' if predicted else 'DIFFERS'}, replayed log "
                             f"{'equal' if replayed else 'DIFFERS'}")
        if self.refused is not None:
            lines.append(f"REFUSED at {self.refused[0]}: {self.refused[1]}")
        else:
            found = failures(self)
            lines.append("NOT VERIFIED: " + "; ".join(found) if found else
                         "OK: every stage verified, PCRs equal the prediction and the log, "
                         "the root opened, the workload's data round-tripped")
        total = sum(self.timings.values())
        lines.append(f"boot time {total * 1000:.0f} ms (" + ", ".join(
            f"{name} {value * 1000:.0f}" for name, value in self.timings.items()) + ")")
        return "\n".join(lines)
