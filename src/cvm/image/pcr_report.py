"""What cvm can and cannot say about each PCR of a boot, before the boot.

A prediction is only as good as its inputs. From the ESP, the varstore, the GPT and a VM
profile cvm computes PCR 1-9 and 14 (and 11-13 where the boot chain extends them); it prints a
value only where every input that goes into it is known. PCR 0 holds the firmware's own code
volumes as measured after PEI wrote its globals into them (they change with the memory size and
the vCPU count), and PCR 2 holds option-ROM drivers of devices such as a NIC: those are taken,
as ``systemd-pcrlock`` does, from a reference event log of a boot of the same VM
configuration (``--firmware-log``), and the output says so; without one they are *unknown*,
with the reason and the input that would settle them. PCR 10 (IMA) is extended by the running
kernel, and no input before the boot settles it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import UsageError
from cvm.formats.tcg.algorithm import algorithm_by_name
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType, event_type_name
from cvm.formats.tcg.replay import startup_locality
from cvm.image.pcr_prediction import Measurement, PcrPrediction
from cvm.image.vm_profile import VmProfile

BOOT_CHAIN_PCRS = range(16)
FIRMWARE_LOG_SETTLES = "--firmware-log LOG (an event log of a boot of the same VM configuration)"


@dataclass(frozen=True)
class PcrStatus:
    """One PCR: its predicted value per bank, or why it is unknown and what would settle it."""

    pcr: int
    values: dict[str, bytes] | None
    source: str
    reason: str = ""
    settle: str = ""

    def to_json(self) -> dict[str, object]:
        if self.values is None:
            return {"value": None, "reason": self.reason, "settle": self.settle}
        return {"source": self.source}


def _log_measurements(log: EventLog, pcr: int, banks: tuple[str, ...]) -> list[Measurement]:
    """The reference log's measurements of ``pcr`` before its separator."""
    found = []
    for event in log.events:
        if event.pcr_index != pcr or event.event_type == EventType.EV_NO_ACTION:
            continue
        if event.event_type == EventType.EV_SEPARATOR:
            break
        digests = {}
        for bank in banks:
            digest = event.digest(algorithm_by_name(bank).alg_id)
            if digest is None:
                raise UsageError(f"the firmware log has no {bank} digests")
            digests[bank] = digest
        name = event_type_name(event.event_type)
        found.append(Measurement(f"{name} (from the firmware log)", digests))
    return found


def apply_firmware_log(prediction: PcrPrediction, log: EventLog, pcrs: tuple[int, ...]) -> None:
    """Replace the firmware-side measurements of ``pcrs`` by the reference log's, and take PCR
    0's initial value (the startup locality) from it."""
    for pcr in pcrs:
        kept = [m for m in prediction.measurements.get(pcr, []) if m.description == "separator"]
        prediction.measurements[pcr] = [*_log_measurements(log, pcr, prediction.banks), *kept]
    prediction.startup_locality = startup_locality(log)


def pcr_report(prediction: PcrPrediction, profile: VmProfile, firmware_log: EventLog | None,
               log_name: str = "") -> list[PcrStatus]:
    """A status per PCR 0-15; ``prediction`` already carries the firmware log if one is given."""
    firmware_pcrs = (0, 2) if profile.measures_option_rom else (0,)
    values = {bank: prediction.values(bank) for bank in prediction.banks}
    statuses = []
    for pcr in BOOT_CHAIN_PCRS:
        known = {bank: values[bank][pcr] for bank in prediction.banks if pcr in values[bank]}
        if pcr in firmware_pcrs and firmware_log is None:
            what = ("the firmware's code volumes as measured after PEI wrote its globals into "
                    "them (they change with the memory size and the vCPU count)"
                    if pcr == 0 else
                    "the option-ROM driver of the profile's NIC, which QEMU's ROM file decides")
            statuses.append(PcrStatus(pcr, None, "", f"PCR {pcr} holds {what}",
                                      FIRMWARE_LOG_SETTLES))
        elif pcr == 10:
            statuses.append(PcrStatus(pcr, None, "", "PCR 10 is extended by the running kernel "
                                      "(IMA), after the boot chain", "nothing before the boot"))
        elif pcr in firmware_pcrs:
            statuses.append(PcrStatus(pcr, known, f"firmware events from {log_name}"))
        elif known:
            source = (f"the VM profile {profile.name}" if pcr in (1, 2, 3, 6) else
                      "the boot files, the varstore and the disk")
            statuses.append(PcrStatus(pcr, known, source))
        else:
            initial = {bank: bytes(algorithm_by_name(bank).digest_size)
                       for bank in prediction.banks}
            statuses.append(PcrStatus(pcr, initial,
                                      "not extended by the boot chain (the OS may extend it "
                                      "later)"))
    return statuses
