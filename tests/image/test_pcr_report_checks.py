"""What cvm says of each PCR before the boot (`cvm.image.pcr_report`): a value where every
input is known, the reason and the input that settles it where not, and the firmware's own
measurements taken from a reference log."""

from __future__ import annotations

import hashlib

import pytest

from cvm.errors import UsageError
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.image.pcr_prediction import Measurement, PcrPrediction
from cvm.image.pcr_report import (
    BOOT_CHAIN_PCRS,
    FIRMWARE_LOG_SETTLES,
    PcrStatus,
    apply_firmware_log,
    pcr_report,
)
from cvm.image.vm_profile import PROFILES

SHA1, SHA256 = 0x04, 0x0B
BANKS = ("sha1", "sha256")
PCR0_REASON = ("PCR 0 holds the firmware's code volumes as measured after PEI wrote its globals "
               "into them (they change with the memory size and the vCPU count)")
PCR2_REASON = ("PCR 2 holds the option-ROM driver of the profile's NIC, which QEMU's ROM file "
               "decides")
PCR10 = ("PCR 10 is extended by the running kernel (IMA), after the boot chain",
         "nothing before the boot")
UNTOUCHED = "not extended by the boot chain (the OS may extend it later)"
FILES = "the boot files, the varstore and the disk"


def _event(pcr: int, kind: int, data: bytes, banks: tuple[int, ...] = (SHA1, SHA256)
           ) -> PcrEvent:
    digests = {SHA1: hashlib.sha1(data).digest(), SHA256: hashlib.sha256(data).digest()}
    return PcrEvent(pcr, kind, tuple((b, digests[b]) for b in banks), data)


def _digests(data: bytes) -> dict[str, bytes]:
    return {"sha1": hashlib.sha1(data).digest(), "sha256": hashlib.sha256(data).digest()}


def _prediction() -> PcrPrediction:
    prediction = PcrPrediction(BANKS)
    for pcr in (0, 1, 2, 3, 4, 5, 6, 7, 10):
        prediction.add(pcr, f"event of PCR {pcr}", f"pcr {pcr}".encode())
        prediction.add(pcr, "separator", bytes(4))
    return prediction


def _statuses(profile: str, log: EventLog | None, name: str = "") -> dict[int, PcrStatus]:
    prediction = _prediction()
    statuses = pcr_report(prediction, PROFILES[profile], log, name)
    assert [s.pcr for s in statuses] == list(range(16)) == list(BOOT_CHAIN_PCRS)
    return {s.pcr: s for s in statuses}


def test_without_a_firmware_log_pcr_0_and_10_are_unknown_and_say_why() -> None:
    values = {bank: _prediction().values(bank) for bank in BANKS}
    statuses = _statuses("q35", None)
    assert statuses[0] == PcrStatus(0, None, "", PCR0_REASON, FIRMWARE_LOG_SETTLES)
    assert FIRMWARE_LOG_SETTLES == ("--firmware-log LOG (an event log of a boot of the same VM "
                                    "configuration)")
    assert statuses[10] == PcrStatus(10, None, "", *PCR10)
    for pcr in (1, 2, 3, 6):
        assert statuses[pcr] == PcrStatus(pcr, {b: values[b][pcr] for b in BANKS},
                                          "the VM profile q35")
    for pcr in (4, 5, 7):
        assert statuses[pcr] == PcrStatus(pcr, {b: values[b][pcr] for b in BANKS}, FILES)
    for pcr in (8, 9, 11, 12, 13, 14, 15):
        assert statuses[pcr] == PcrStatus(pcr, {"sha1": bytes(20), "sha256": bytes(32)},
                                          UNTOUCHED)


def test_a_profile_with_a_nics_option_rom_leaves_pcr_2_unknown_too() -> None:
    statuses = _statuses("q35-net", None)
    assert statuses[2] == PcrStatus(2, None, "", PCR2_REASON, FIRMWARE_LOG_SETTLES)
    assert statuses[0].reason == PCR0_REASON
    assert statuses[1].source == "the VM profile q35-net"


def test_with_a_firmware_log_pcr_0_and_2_come_from_it() -> None:
    log = EventLog(None, ())
    values = {bank: _prediction().values(bank) for bank in BANKS}
    statuses = _statuses("q35-net", log, "boot.log")
    for pcr in (0, 2):
        assert statuses[pcr] == PcrStatus(pcr, {b: values[b][pcr] for b in BANKS},
                                          "firmware events from boot.log")
    assert statuses[10].values is None  # no log settles PCR 10
    plain = _statuses("q35", log, "boot.log")
    assert plain[2].source == "the VM profile q35"


def test_the_json_of_a_status() -> None:
    assert PcrStatus(0, None, "", "why", "how").to_json() == {
        "value": None, "reason": "why", "settle": "how"}
    assert PcrStatus(4, {"sha1": b"\x01"}, "where", "x", "y").to_json() == {"source": "where"}
    assert PcrStatus(4, {}, "where").to_json() == {"source": "where"}


def _locality(value: int) -> PcrEvent:
    return PcrEvent(0, EventType.EV_NO_ACTION, (), b"StartupLocality\0" + bytes([value]))


def test_the_firmware_log_replaces_the_firmware_measurements_before_its_separator() -> None:
    prediction = _prediction()
    untouched = list(prediction.measurements[4])
    log = EventLog(None, (
        _locality(3),
        _event(0, EventType.EV_S_CRTM_VERSION, b"crtm"),
        _event(2, EventType.EV_EFI_BOOT_SERVICES_DRIVER, b"rom"),
        _event(0, EventType.EV_NO_ACTION, b"not measured"),
        _event(0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, b"fv"),
        _event(0, EventType.EV_SEPARATOR, bytes(4)),
        _event(0, EventType.EV_EFI_ACTION, b"after the separator"),
    ))
    apply_firmware_log(prediction, log, (0, 2))
    assert prediction.measurements[0] == [
        Measurement("EV_S_CRTM_VERSION (from the firmware log)", _digests(b"crtm")),
        Measurement("EV_EFI_PLATFORM_FIRMWARE_BLOB (from the firmware log)", _digests(b"fv")),
        Measurement("separator", _digests(bytes(4))),
    ]
    assert prediction.measurements[2] == [
        Measurement("EV_EFI_BOOT_SERVICES_DRIVER (from the firmware log)", _digests(b"rom")),
        Measurement("separator", _digests(bytes(4))),
    ]
    assert prediction.measurements[4] == untouched
    assert prediction.startup_locality == 3
    again = _prediction()
    again.startup_locality = 3
    apply_firmware_log(again, EventLog(None, ()), (5,))
    assert again.measurements[5] == [Measurement("separator", _digests(bytes(4)))]
    assert again.startup_locality == 0
    empty = PcrPrediction(BANKS)
    apply_firmware_log(empty, EventLog(None, ()), (0,))
    assert empty.measurements == {0: []}


def test_a_firmware_log_without_a_bank_is_refused() -> None:
    log = EventLog(None, (_event(0, EventType.EV_S_CRTM_VERSION, b"crtm", (SHA256,)),))
    with pytest.raises(UsageError) as caught:
        apply_firmware_log(_prediction(), log, (0,))
    assert str(caught.value) == "the firmware log has no sha1 digests"
    apply_firmware_log(PcrPrediction(("sha256",)), log, (0,))
