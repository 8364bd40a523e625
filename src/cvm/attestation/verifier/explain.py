"""Explaining a PCR difference: the event of the log that differs from the reference log.

A PCR is a hash chain, so its value says only *that* something changed. The event log says
*what*: the events extending the PCR are compared one by one, in order, with the reference
boot's log (the one the owner's build produced); the first one whose digest differs — or that
one log has and the other lacks — is the input that changed, described from its event data
(the file a firmware loaded, the variable it measured, the GRUB command, the kernel command
line).
"""

from __future__ import annotations

from cvm.errors import FormatError
from cvm.formats.tcg.event_data import decode_event_data
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType, event_type_name
from cvm.formats.tcg.pcr_event import PcrEvent

MAX_DESCRIPTION = 160


def describe(event: PcrEvent) -> str:
    """``EV_TYPE: what the event data says`` (shortened)."""
    try:
        text = decode_event_data(event.event_type, event.event).describe()
    except FormatError:
        text = f"{len(event.event)} bytes of undecodable event data"
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 1] + "…"
    return f"{event_type_name(event.event_type)}: {text}"


def _extending(log: EventLog, pcr: int, alg_id: int) -> list[tuple[int, PcrEvent]]:
    first = 1 if log.is_crypto_agile else 0
    return [
        (number, event) for number, event in enumerate(log.events, start=first)
        if event.pcr_index == pcr and event.event_type != EventType.EV_NO_ACTION
        and event.digest(alg_id) is not None
    ]


def explain_pcr(log: EventLog, reference: EventLog, pcr: int, alg_id: int) -> str:
    """Which event makes ``pcr`` differ between ``log`` and ``reference``."""
    ours = _extending(log, pcr, alg_id)
    theirs = _extending(reference, pcr, alg_id)
    for (number, event), (_, expected) in zip(ours, theirs, strict=False):
        if event.digest(alg_id) != expected.digest(alg_id):
            ours_text, theirs_text = describe(event), describe(expected)
            if ours_text == theirs_text:  # same name, other content: show the digests
                ours_text += f", digest {(event.digest(alg_id) or b'').hex()[:16]}…"
                theirs_text += f", digest {(expected.digest(alg_id) or b'').hex()[:16]}…"
            return f"event {number} differs: {ours_text} (the reference boot has {theirs_text})"
    if len(ours) > len(theirs):
        number, event = ours[len(theirs)]
        return f"event {number} is extra: {describe(event)}"
    if len(theirs) > len(ours):
        return f"an event is missing: the reference boot has {describe(theirs[len(ours)][1])}"
    return "the event log's events equal the reference log's for this PCR"
