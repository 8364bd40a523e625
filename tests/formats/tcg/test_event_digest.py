"""Digests that must cover their event data: real logs, tampered data, the per-type rules."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from cvm.errors import Finding
from cvm.formats.tcg.event_digest import GRUB_PREFIXES, check_event, validate
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType, event_type_name
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.wire import Guid


def test_real_boot_log_digests_all_cover_their_data(vectors: Path) -> None:
    log = EventLog.parse((vectors / "realboot/eventlog.bin").read_bytes())
    assert validate(log) == ()
    checked = [e for e in log.events if check_event(e) is True]
    assert len(checked) == 37
    assert {e.pcr_index for e in checked} >= {0, 1, 4, 5, 7, 8}


def test_gdc_host_crtm_version_is_reported(vectors: Path) -> None:
    # tpm2_eventlog warns about the same record ("Event 3's digest does not match its payload").
    log = EventLog.parse((vectors / "tpm/go-tpm-tools/gdc-host.bin").read_bytes())
    findings = validate(log)
    assert [f.claim for f in findings] == ["event 3 (EV_S_CRTM_VERSION, PCR 0)"]


def test_tampered_grub_command_is_reported(vectors: Path) -> None:
    log = EventLog.parse((vectors / "realboot/eventlog.bin").read_bytes())
    events = list(log.events)
    index = next(i for i, e in enumerate(events) if e.event == b"grub_cmd: boot\0")
    original = events[index]
    events[index] = PcrEvent(original.pcr_index, original.event_type, original.digests,
                             b"grub_cmd: boom\0")
    findings = validate(EventLog(log.spec_id, tuple(events)))
    assert len(findings) == 1
    assert findings[0].claim == f"event {index + 1} (EV_IPL, PCR 8)"


def _record(event_type: int, payload: bytes, event: bytes) -> PcrEvent:
    return PcrEvent(7, event_type, ((0x000B, hashlib.sha256(payload).digest()),), event)


def test_rules_per_type() -> None:
    variable = UefiVariableData(Guid.parse("8be4df61-93ca-11d2-aa0d-00e098032b8c"), "Boot0000",
                                b"option")
    whole = variable.to_bytes()
    assert check_event(_record(EventType.EV_EFI_VARIABLE_BOOT, b"option", whole)) is True
    assert check_event(_record(EventType.EV_EFI_VARIABLE_BOOT, whole, whole)) is True
    assert check_event(_record(EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, b"option", whole)) is False
    assert check_event(_record(EventType.EV_EFI_VARIABLE_AUTHORITY, whole, whole)) is True
    assert check_event(_record(EventType.EV_EFI_BOOT_SERVICES_APPLICATION, b"", b"")) is None
    assert check_event(_record(EventType.EV_IPL, b"x", b"(hd0)/x\0")) is None
    # a record that no longer parses is checked against its whole data
    assert check_event(_record(EventType.EV_EFI_VARIABLE_BOOT, b"", b"short")) is False
    assert check_event(_record(EventType.EV_EFI_VARIABLE_BOOT, b"short", b"short")) is True
    assert check_event(_record(EventType.EV_EFI_VARIABLE_AUTHORITY, b"", b"short")) is False
    # stray bytes after the structure: only the whole record counts
    stray = whole + b"\0"
    assert check_event(_record(EventType.EV_EFI_VARIABLE_BOOT, b"option", stray)) is False
    assert check_event(_record(EventType.EV_EFI_VARIABLE_BOOT, stray, stray)) is True


# Tampering with every checkable record of the real logs, whatever the trick.

REAL_LOGS = (
    "realboot/eventlog.bin", "tpm/keylime/binary_bios_measurements",
    "tpm/keylime/binary_bios_measurements-secureboot", "tpm/go-tpm-tools/rhel8-uefi.bin",
    "tpm/go-tpm-tools/cos-93-amd-sev.bin", "tpm/go-tpm-tools/debian-10.bin",
    "tpm/go-tpm-tools/arch-linux-workstation.bin", "tpm/go-tpm-tools/glinux-alex.bin",
    "tpm/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin", "tpm/tpm2-tools/event-sd-boot-fedora37.bin",
    "tpm/tpm2-tools/event-postcode.bin", "tpm/go-attestation/sb_cert_eventlog",
)


def _edited(data: bytes) -> bytes:
    """``data`` with its last byte but one changed: a byte every form of the digest covers (the
    end of a GRUB string, of a variable's data, the padding old shim hashed)."""
    edited = bytearray(data)
    where = max(len(data) - 2, 0)
    edited[where] = ord("!") if edited[where] != ord("!") else ord("?")
    return bytes(edited)


def _tricks(event: PcrEvent) -> dict[str, PcrEvent]:
    data = event.event
    edited = _edited(data)
    variants = {
        "edit": edited,
        "edit, drop the NUL": edited[:-1] if edited.endswith(b"\0") else edited + b"\0",
        "edit, add a NUL": edited + b"\0",
        "append a byte": data + b"x",
        "append six bytes": data + bytes(5) + b"\xaf",
        "cut in half": data[: len(data) // 2],
        "empty": b"",
    }
    tampered = {k: dataclasses.replace(event, event=v) for k, v in variants.items()}
    if event.pcr_index == 8:
        tampered["edit, change the type"] = dataclasses.replace(
            event, event_type=EventType.EV_POST_CODE, event=edited)
    return tampered


@pytest.mark.parametrize("name", REAL_LOGS)
def test_every_trick_on_a_checkable_record_is_flagged(vectors: Path, name: str) -> None:
    log = EventLog.parse((vectors / name).read_bytes())
    checkable = [e for e in log.events if check_event(e) is True]
    assert checkable
    for event in checkable:
        for trick, tampered in _tricks(event).items():
            assert check_event(tampered) is False, (name, trick, event.event[:40])


def test_grub_records_in_both_forms(vectors: Path) -> None:
    """Upstream GRUB hashes the string without its NUL; rhboot's GRUB hashes ``grub_cmd ``
    strings with it. Dropping the logged NUL alone changes no measured byte."""
    upstream = EventLog.parse((vectors / "realboot/eventlog.bin").read_bytes())
    rhboot = EventLog.parse((vectors / "tpm/go-tpm-tools/rhel8-uefi.bin").read_bytes())
    seen = set()
    for log in (upstream, rhboot):
        for event in log.events:
            prefix = next((p for p in GRUB_PREFIXES if event.event.startswith(p)), None)
            if prefix is None:
                continue
            seen.add(prefix)
            assert check_event(event) is True
            assert check_event(dataclasses.replace(event, event=event.event[:-1])) is True
            elsewhere = dataclasses.replace(event, pcr_index=9, event=_edited(event.event))
            assert check_event(elsewhere) is False
    assert seen >= {b"grub_cmd: ", b"kernel_cmdline: ", b"grub_cmd ", b"grub_kernel_cmdline "}


def test_records_that_hash_an_object_outside_the_log_are_not_checkable(vectors: Path) -> None:
    log = EventLog.parse((vectors / "realboot/eventlog.bin").read_bytes())
    files = [e for e in log.events if e.event_type == EventType.EV_IPL and e.pcr_index == 9]
    images = [e for e in log.events
              if e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION]
    assert files and images
    for event in files + images:
        assert check_event(event) is None
        assert check_event(dataclasses.replace(event, event=_edited(event.event))) is None


def test_old_shim_authority_records_leave_their_last_byte_out(vectors: Path) -> None:
    log = EventLog.parse((vectors / "tpm/go-tpm-tools/cos-93-amd-sev.bin").read_bytes())
    old = [e for e in log.events if e.event_type == EventType.EV_EFI_VARIABLE_AUTHORITY
           and UefiVariableData.parse(e.event).trailing]
    assert len(old) == 2
    for event in old:
        assert check_event(event) is True
        for size in (5, 7):  # only the padding shim wrote, nothing else
            stray = event.event[:-6] + bytes(size - 1) + b"\xaf"
            assert check_event(dataclasses.replace(event, event=stray)) is False
        nonzero = event.event[:-2] + b"\x01\xaf"
        assert check_event(dataclasses.replace(event, event=nonzero)) is False


def test_findings_name_the_record_and_what_differs(vectors: Path) -> None:
    log = EventLog.parse((vectors / "tpm/go-tpm-tools/gdc-host.bin").read_bytes())
    assert validate(log) == (Finding(
        "event 3 (EV_S_CRTM_VERSION, PCR 0)", "a digest of its event data",
        "a digest of something else", "the event data may not be what was measured"),)
    legacy = EventLog.parse((vectors / "tpm/go-tpm-tools/debian-10.bin").read_bytes())
    assert validate(legacy) == ()
    events = list(legacy.events)
    index = next(i for i, e in enumerate(events) if check_event(e) is True)
    events[index] = dataclasses.replace(events[index], event=_edited(events[index].event))
    findings = validate(EventLog(None, tuple(events)))
    event = events[index]  # legacy logs number their records from 0
    assert [f.claim for f in findings] == [
        f"event {index} ({event_type_name(event.event_type)}, PCR {event.pcr_index})"]


def test_no_action_records_are_never_checked_even_in_pcr_8() -> None:
    record = PcrEvent(8, EventType.EV_NO_ACTION, ((0x000B, bytes(32)),), b"grub_cmd: x\0")
    assert check_event(record) is None
    elsewhere = PcrEvent(4, EventType.EV_POST_CODE, ((0x000B, bytes(32)),), b"anything")
    assert check_event(elsewhere) is None


def test_old_shim_padding_needs_its_five_zero_bytes() -> None:
    """A record with five non-zero stray bytes whose digest covers it all: appending a sixth
    byte must not pass as old shim's padding."""
    variable = UefiVariableData(Guid.parse("d719b2cb-3d3a-4596-a3bc-dad00e67656f"), "db",
                                b"certificate", b"stray")
    data = variable.to_bytes()
    assert check_event(_record(EventType.EV_EFI_VARIABLE_AUTHORITY, data, data)) is True
    longer = data + b"\xaf"
    assert check_event(_record(EventType.EV_EFI_VARIABLE_AUTHORITY, data, longer)) is False
