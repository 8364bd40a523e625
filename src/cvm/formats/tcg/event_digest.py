"""Checking that a record's digests cover its own event data, where the producer says they do.

PFP 1.05 r23 sections 3.3.4 and 10.4 say what each type's digest covers; GRUB, shim and
systemd-boot say it for the records they write. For these records the digest is computable from
the event data alone, so a verifier can tell whether the data it reads is the data that was
measured. The digest may be the hash of any one of the forms below; each form is a function of
the logged bytes alone, so an edited record cannot be brought back to its digest:

* EV_SEPARATOR, EV_ACTION and EV_EFI_ACTION (action strings: edk2 logs exactly the bytes it
  hashes, without a NUL), EV_S_CRTM_VERSION, EV_EFI_GPT_EVENT, EV_EFI_VARIABLE_DRIVER_CONFIG,
  EV_EFI_VARIABLE_BOOT2: H(event data);
* EV_EFI_VARIABLE_BOOT: H(event data) or, for a record without stray bytes after the structure,
  H(VariableData) (both are seen in real firmware; go-attestation and tpm2-tools accept both;
  edk2 hashes VariableData only, so the name and GUID of such a record are not covered);
* EV_EFI_VARIABLE_AUTHORITY: H(event data). shim before 15.3 sized its UEFI_VARIABLE_DATA from a
  padded C struct: the record then ends in :data:`OLD_SHIM_TRAILING_SIZE` stray bytes, the first
  five zero, and the digest covers the record without its last byte;
* EV_IPL strings of GRUB in every form it writes (:data:`GRUB_PREFIXES`): upstream GRUB 2.06
  (``grub-core/commands/tpm.c``: ``grub_cmd: ``, ``kernel_cmdline: ``, ``module_cmdline: ``)
  hashes the string after the prefix without its NUL; rhboot's GRUB 2.02 hashes its
  ``grub_cmd `` strings with their NUL and its ``grub_kernel_cmdline `` strings without (as the
  RHEL 8 log of the vectors shows). Whether or not the log keeps the NUL, the hashed string is
  rebuilt by the prefix's rule, so dropping or adding the NUL changes nothing of the verdict;
* every other record of PCR 8, whatever its type but EV_NO_ACTION (GRUB's and systemd-boot's
  string PCR; systemd-boot logs its UTF-16 command line with or without the final byte of its
  NUL): H(event data) or H(event data + NUL). Nothing in PCR 8 hashes an object outside the
  log and its producers write only EV_IPL there, so a PCR 8 string whose prefix or event type
  was edited (neither is covered by the digest) is still checked.

A record whose data no longer parses is checked against the forms that need no parsing, so
breaking the structure does not make a record uncheckable. Every other type hashes an object
outside the log (an image, a firmware volume, a file, a variable's content, an ACPI table) or
is not extended at all (EV_NO_ACTION), and is reported as not checkable: EV_IPL outside PCR 8
(GRUB's files in PCR 9, shim's MokList copies in PCR 14, systemd-stub's PCR 12 records, whose
credentials and extensions hash files), EV_EVENT_TAG, EV_COMPACT_HASH and EV_EFI_GPT_EVENT2,
whose producers vary. ``validate`` returns findings; it never raises for a mismatch.
"""

from __future__ import annotations

from cvm.errors import Finding, FormatError
from cvm.formats.tcg.algorithm import ALGORITHMS_BY_ID
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType, event_type_name
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData

WHOLE_EVENT_TYPES = frozenset({
    EventType.EV_SEPARATOR, EventType.EV_ACTION, EventType.EV_EFI_ACTION,
    EventType.EV_S_CRTM_VERSION, EventType.EV_EFI_GPT_EVENT,
    EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, EventType.EV_EFI_VARIABLE_BOOT2,
})
NUL = b"\0"
# GRUB's EV_IPL prefixes and whether the hashed string keeps its NUL (the log always has it).
GRUB_PREFIXES = {
    b"grub_cmd: ": False, b"kernel_cmdline: ": False, b"module_cmdline: ": False,
    b"grub_cmd ": True, b"grub_kernel_cmdline ": False,
}
STRING_PCR = 8
OLD_SHIM_TRAILING_SIZE = 6
OLD_SHIM_ZERO_PADDING = bytes(5)


def _without_nul(data: bytes) -> bytes:
    return data[:-1] if data.endswith(NUL) else data


def _authority_payloads(data: bytes) -> tuple[bytes, ...]:
    try:
        trailing = UefiVariableData.parse(data).trailing
    except FormatError:
        return (data,)
    if len(trailing) == OLD_SHIM_TRAILING_SIZE and trailing.startswith(OLD_SHIM_ZERO_PADDING):
        return (data, data[:-1])
    return (data,)


def _variable_boot_payloads(data: bytes) -> tuple[bytes, ...]:
    try:
        variable = UefiVariableData.parse(data)
    except FormatError:
        return (data,)
    return (data,) if variable.trailing else (data, variable.data)


def _ipl_payloads(event: PcrEvent) -> tuple[bytes, ...] | None:
    data = event.event
    for prefix, with_nul in GRUB_PREFIXES.items():
        if data.startswith(prefix):
            text = _without_nul(data[len(prefix):])
            return (text + NUL if with_nul else text,)
    if event.pcr_index == STRING_PCR:
        return (data, data + NUL)
    return None


def covered_payloads(event: PcrEvent) -> tuple[bytes, ...] | None:
    """The byte strings the record's digest may be the hash of, or None if not checkable."""
    kind, data = event.event_type, event.event
    if kind in WHOLE_EVENT_TYPES:
        return (data,)
    if kind == EventType.EV_EFI_VARIABLE_BOOT:
        return _variable_boot_payloads(data)
    if kind == EventType.EV_EFI_VARIABLE_AUTHORITY:
        return _authority_payloads(data)
    if kind == EventType.EV_IPL or (event.pcr_index == STRING_PCR
                                    and kind != EventType.EV_NO_ACTION):
        return _ipl_payloads(event)
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
