"""Digests that must cover their event data: real logs, tampered data, the per-type rules."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cvm.formats.tcg.event_digest import check_event, validate
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
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
    assert check_event(_record(EventType.EV_EFI_VARIABLE_BOOT, b"", b"short")) is None
