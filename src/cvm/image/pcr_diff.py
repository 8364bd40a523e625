"""Where a predicted boot and a real one part: event by event, per PCR, with the cause.

Events of different PCRs interleave differently from boot to boot (and image load addresses
move), so the comparison is per PCR: the two event sequences of one PCR are walked side by side
and the first event that differs is explained in the boot's own terms — which file (GRUB's PCR
9 file events), which command (PCR 8), which variable (PCR 1 and 7), which image and from
which device (PCR 4), the disk's partition table (PCR 5) — or reported as an event the other
boot does not have.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.formats.tcg.event_data import IMAGE_TYPES, VARIABLE_TYPES, decode_event_data
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType, event_type_name
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData

DEFAULT_PCRS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15)


@dataclass(frozen=True)
class PcrDifference:
    """The first difference in one PCR: where (the event's index in each log) and why."""

    pcr: int
    predicted_index: int | None
    real_index: int | None
    cause: str

    def to_json(self) -> dict[str, object]:
        return {"pcr": self.pcr, "predicted_event": self.predicted_index,
                "real_event": self.real_index, "cause": self.cause}


def _describe(event: PcrEvent) -> str:
    try:
        return decode_event_data(event.event_type, event.event).describe()
    except FormatError:
        return f"{len(event.event)} bytes"


def _subject(event: PcrEvent) -> str:
    """The thing the event measures, in the boot's terms."""
    kind = event.event_type
    text = event.event.rstrip(b"\0").decode("utf-8", "replace")
    if kind in VARIABLE_TYPES:
        try:
            return f"the variable {UefiVariableData.parse(event.event).name}"
        except FormatError:
            return "a variable"
    if kind in IMAGE_TYPES:
        try:
            path = UefiImageLoadEvent.parse(event.event).device_path.to_text()
        except FormatError:
            path = ""
        return f"the image {path or '(loaded from memory)'}"
    if kind == EventType.EV_EFI_GPT_EVENT:
        return "the disk's partition table"
    if event.pcr_index == 8 and text.startswith("grub_cmd: "):
        return f"GRUB's command {text.removeprefix('grub_cmd: ')!r}"
    if event.pcr_index == 8 and text.startswith("kernel_cmdline: "):
        return f"the kernel command line {text.removeprefix('kernel_cmdline: ')!r}"
    if event.pcr_index == 9 and kind == EventType.EV_IPL:
        return f"the file {text}"
    return f"{event_type_name(kind)} {_describe(event)}"  # strings come quoted


def _same_event(a: PcrEvent, b: PcrEvent) -> bool:
    """Same event data (image loads: same device path and size; addresses move)."""
    if a.event_type != b.event_type:
        return False
    if a.event_type in IMAGE_TYPES:
        try:
            left, right = UefiImageLoadEvent.parse(a.event), UefiImageLoadEvent.parse(b.event)
        except FormatError:
            return a.event == b.event
        return (left.device_path, left.image_length) == (right.device_path, right.image_length)
    return a.event == b.event


def _common_banks(a: PcrEvent, b: PcrEvent) -> list[int]:
    return sorted({alg for alg, _ in a.digests} & {alg for alg, _ in b.digests})


def _explain(pcr: int, ours: PcrEvent, theirs: PcrEvent) -> str | None:
    if _same_event(ours, theirs):
        for alg in _common_banks(ours, theirs):
            if ours.digest(alg) != theirs.digest(alg):
                return (f"{_subject(theirs)}: the measured content differs (predicted digest "
                        f"{(ours.digest(alg) or b'').hex()[:16]}…, real "
                        f"{(theirs.digest(alg) or b'').hex()[:16]}…)")
        return None
    if ours.event_type == theirs.event_type:
        if _subject(ours) == _subject(theirs):
            hint = " (the VM's devices are not the profile's: see --profile)" if pcr == 1 else ""
            return f"{_subject(theirs)} holds other data{hint}"
        return f"predicted {_subject(ours)}, the real boot measured {_subject(theirs)}"
    return (f"predicted {event_type_name(ours.event_type)} ({_subject(ours)}), the real boot "
            f"logged {event_type_name(theirs.event_type)} ({_subject(theirs)})")


def _events(log: EventLog, pcr: int) -> list[tuple[int, PcrEvent]]:
    return [(i, e) for i, e in enumerate(log.events)
            if e.pcr_index == pcr and e.event_type != EventType.EV_NO_ACTION]


def diff(predicted: EventLog, real: EventLog,
         pcrs: tuple[int, ...] = DEFAULT_PCRS) -> list[PcrDifference]:
    """The first difference of every PCR in ``pcrs`` whose events differ."""
    found = []
    for pcr in pcrs:
        ours, theirs = _events(predicted, pcr), _events(real, pcr)
        for (i, mine), (j, other) in zip(ours, theirs, strict=False):
            cause = _explain(pcr, mine, other)
            if cause is not None:
                found.append(PcrDifference(pcr, i, j, cause))
                break
        else:
            if len(ours) > len(theirs):
                i, extra = ours[len(theirs)]
                found.append(PcrDifference(pcr, i, None, f"the real boot never measured "
                                           f"{_subject(extra)}"))
            elif len(theirs) > len(ours):
                j, extra = theirs[len(ours)]
                found.append(PcrDifference(pcr, None, j, f"the real boot also measured "
                                           f"{_subject(extra)}, which the prediction lacks"))
    return found
