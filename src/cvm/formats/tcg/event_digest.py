"""Checking that a record's digests cover its own event data, where the spec says they do.

PFP 1.05 r23 sections 3.3.4 and 10.4 say what each type's digest covers. For these types the
digest is computable from the event data alone, so a verifier can tell whether the data it
reads is the data that was measured:

* EV_SEPARATOR, EV_EFI_ACTION, EV_S_CRTM_VERSION, EV_EFI_GPT_EVENT, EV_EFI_VARIABLE_DRIVER_CONFIG,
  EV_EFI_VARIABLE_BOOT2: H(event data);
* EV_EFI_VARIABLE_BOOT: H(VariableData), or H(event data) as some firmware does (go-attestation
  and tpm2-tools accept both);
* EV_EFI_VARIABLE_AUTHORITY: H(event data) (records of shim before 15.3, recognisable by the
  stray bytes after the structure, hash something else and are not checked);
* EV_IPL strings of GRUB (``grub_cmd: ``, ``kernel_cmdline: ``, ``module_cmdline: ``):
  H(string without prefix and NUL) (GRUB ``grub-core/commands/tpm.c``).

Other types hash an object outside the log (an image, a firmware volume, a file) and are
reported as not checkable. ``validate`` returns findings; it never raises for a mismatch.
"""

from __future__ import annotations

from cvm.errors import Finding, FormatError
from cvm.formats.tcg.algorithm import ALGORITHMS_BY_ID
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType, event_type_name
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData

WHOLE_EVENT_TYPES = frozenset({
    EventType.EV_SEPARATOR, EventType.EV_EFI_ACTION, EventType.EV_S_CRTM_VERSION,
    EventType.EV_EFI_GPT_EVENT, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
    EventType.EV_EFI_VARIABLE_BOOT2,
})
GRUB_PREFIXES = (b"grub_cmd: ", b"kernel_cmdline: ", b"module_cmdline: ")


def covered_payloads(event: PcrEvent) -> tuple[bytes, ...] | None:
    """The byte strings the record's digest may be the hash of, or None if not checkable."""
    kind, data = event.event_type, event.event
    if kind in WHOLE_EVENT_TYPES:
        return (data,)
    try:
        if kind == EventType.EV_EFI_VARIABLE_BOOT:
            return (UefiVariableData.parse(data).data, data)
        if kind == EventType.EV_EFI_VARIABLE_AUTHORITY:
            if UefiVariableData.parse(data).trailing:
                return None
            return (data,)
    except FormatError:
        return None
    if kind == EventType.EV_IPL and data.endswith(b"\0"):
        for prefix in GRUB_PREFIXES:
            if data.startswith(prefix):
                return (data[len(prefix) : -1],)
    return None


def check_event(event: PcrEvent) -> bool | None:
    """True if every known-bank digest matches, False if one does not, None if uncheckable."""
    payloads = covered_payloads(event)
    if payloads is None:
        return None
    for alg_id, digest in event.digests:
        algorithm = ALGORITHMS_BY_ID.get(alg_id)
        if algorithm is not None and digest not in {algorithm.digest(p) for p in payloads}:
            return False
    return True


def validate(log: EventLog) -> tuple[Finding, ...]:
    """One finding per record whose digest does not cover its event data."""
    first = 1 if log.is_crypto_agile else 0
    findings = []
    for number, event in enumerate(log.events, start=first):
        if check_event(event) is False:
            findings.append(Finding(
                f"event {number} ({event_type_name(event.event_type)}, PCR {event.pcr_index})",
                "a digest of its event data", "a digest of something else",
                "the event data may not be what was measured",
            ))
    return tuple(findings)
