"""``cvm eventlog``, one decision at a time: a log that does not parse named with its file,
each bank by name (an unknown one by its ID), the header record as the Spec ID event, each
digest check, the digest shown per record, the banks replayed and what is printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.cli import eventlog
from cvm.errors import FormatError, UsageError
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.pcr_event import PcrEvent

SHA1, SHA256 = 0x0004, 0x000B


@pytest.fixture(scope="module")
def real(vectors: Path) -> EventLog:
    return EventLog.parse((vectors / "realboot/eventlog.bin").read_bytes())


@pytest.fixture(scope="module")
def legacy(vectors: Path) -> EventLog:
    return EventLog.parse((vectors / "tpm/go-tpm-tools/debian-10.bin").read_bytes())


def test_a_log_that_does_not_parse_is_named(tmp_path: Path) -> None:
    path = tmp_path / "log.bin"
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(FormatError) as refused:
        eventlog._read(path)
    assert str(refused.value).startswith(f"{path}: ")


def test_a_bank_is_named_or_shown_by_its_id() -> None:
    assert eventlog._bank_name(SHA256) == "sha256"
    assert eventlog._bank_name(0x1234) == "alg_0x1234"
    assert eventlog._bank_name(0xFF) == "alg_0x00ff"


def test_each_digest_check_is_said() -> None:
    data = b"some data"
    import hashlib

    good = PcrEvent(4, EventType.EV_EFI_ACTION, ((SHA256, hashlib.sha256(data).digest()),),
                    data)
    bad = PcrEvent(4, EventType.EV_EFI_ACTION, ((SHA256, bytes(32)),), data)
    opaque = PcrEvent(0, EventType.EV_POST_CODE, ((SHA256, bytes(32)),), data)
    assert eventlog._digest_check(good) == "ok"
    assert eventlog._digest_check(bad) == "mismatch"
    assert eventlog._digest_check(opaque) == "not checkable"


def test_the_header_record_is_the_spec_id_event(real: EventLog, legacy: EventLog) -> None:
    events = eventlog._all_events(real)
    assert len(events) == len(real.events) + 1 and events[0] == real.header_event()
    assert eventlog._decoded(real, 0, events[0]).to_json()["kind"] == "Spec ID Event03"
    assert eventlog._decoded(real, 1, events[1]).to_json()["kind"] != "Spec ID Event03"
    assert eventlog._all_events(legacy) == list(legacy.events)
    assert eventlog._decoded(legacy, 0, legacy.events[0]).to_json()["kind"] != "Spec ID Event03"


def test_the_document_of_a_log(real: EventLog, legacy: EventLog) -> None:
    document = eventlog.log_document(real)
    assert document["format"] == "crypto-agile" and document["banks"] == ["sha1", "sha256"]
    events = document["events"]
    assert isinstance(events, list) and len(events) == 50
    second = real.events[0]
    assert events[1] == {
        "number": 1, "pcr": second.pcr_index, "event_type": second.event_type,
        "event_type_name": eventlog.event_type_name(second.event_type),
        "digests": {"sha1": second.digest(SHA1).hex(), "sha256": second.digest(SHA256).hex()},
        "event_size": len(second.event), "digest_check": eventlog._digest_check(second),
        "event": eventlog._decoded(real, 1, second).to_json()}
    assert eventlog.log_document(legacy)["format"] == "sha1"


def test_show_prints_each_record_with_its_last_banks_digest(real: EventLog) -> None:
    lines = eventlog.show_lines(real)
    assert lines[0] == "crypto-agile event log, banks sha1, sha256, 50 events"
    assert len(lines) == 51
    assert lines[1].endswith(" " + eventlog._decoded(real, 0, real.header_event()).describe())
    assert "Spec ID" in lines[1]
    event = real.events[0]
    decoded = eventlog._decoded(real, 1, event)
    assert lines[2] == (f"   1 pcr{event.pcr_index:<3d} "
                        f"{eventlog.event_type_name(event.event_type):34s} "
                        f"{event.digest(SHA256)[:8].hex():16s} {decoded.describe()}")


def test_show_flags_a_digest_that_does_not_cover_its_data_and_takes_the_first_bank() -> None:
    data = b"some data"
    log = EventLog(None, (
        PcrEvent(4, EventType.EV_EFI_ACTION, ((SHA1, bytes(20)),), data),
        PcrEvent(4, EventType.EV_POST_CODE, ((SHA1, b"\x01" * 20),), data),
        PcrEvent(4, EventType.EV_POST_CODE, (), data)))
    lines = eventlog.show_lines(log)
    assert lines[0] == "legacy SHA-1 event log, banks sha1, 3 events"
    assert lines[1].endswith("  [digest does not cover the event data]")
    assert "[digest" not in lines[2] and " 0101010101010101 " in lines[2]
    assert lines[3] == f"   2 pcr4   {'EV_POST_CODE':34s} {'':16s} 'some data'"
    shifted = EventLog(None, (PcrEvent(4, EventType.EV_POST_CODE, ((0x0C, b"\x02" * 48),
                                                                   (SHA1, b"\x01" * 20)), data),))
    assert " 0101010101010101 " in eventlog.show_lines(shifted)[1]
    mixed = EventLog(None, (PcrEvent(4, EventType.EV_POST_CODE, ((0x0C, b"\x02" * 48),), data),))
    assert " 0202020202020202 " in eventlog.show_lines(mixed)[1]


def test_the_banks_replayed_are_the_ones_named_or_all() -> None:
    assert eventlog.wanted_banks([]) is None
    assert eventlog.wanted_banks(["sha256", "SHA1"]) == (SHA256, SHA1)
    with pytest.raises(UsageError):
        eventlog.wanted_banks(["md5"])


def test_replay_prints_each_bank_and_pcr_in_order() -> None:
    values = {"sha1": {7: b"\x07", 0: b"\x00\x01"}, "sha256": {10: b"\xff"}}
    assert eventlog.replay_lines(values) == ["sha1:", "   0: 0001", "   7: 07", "sha256:",
                                             "  10: ff"]
    assert eventlog.replay_document(values) == {"sha1": {"0": "0001", "7": "07"},
                                                "sha256": {"10": "ff"}}
    assert list(eventlog.replay_document(values)["sha1"]) == ["0", "7"]


def test_show_decodes_a_header_whose_vendor_info_follows_the_record(vectors: Path) -> None:
    log = EventLog.parse((vectors / "tpm/tpm2-tools/specid-vendordata.bin").read_bytes())
    assert eventlog.show_lines(log)[1].endswith(" Spec ID Event03, banks 0x0004/20, 0x000b/32")
