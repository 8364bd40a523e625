"""A whole event log's checks one by one: what makes bytes a log, the first record's PCR, the
Spec ID record's PCR, type and digest, the legacy SHA-1 log, the banks a log carries, and a
vendorInfo written after the header record."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.formats.tcg.algorithm import TPM_ALG_SHA1, TPM_ALG_SHA256, TPM_ALG_SHA384
from cvm.formats.tcg.event_log import EventLog, banks_of
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.spec_id_event import AlgorithmSize, SpecIdEvent

SPEC = SpecIdEvent((AlgorithmSize(TPM_ALG_SHA256, 32), AlgorithmSize(TPM_ALG_SHA1, 20)))
RECORD = PcrEvent(4, EventType.EV_POST_CODE,
                  ((TPM_ALG_SHA256, b"\x22" * 32), (TPM_ALG_SHA1, b"\x11" * 20)), b"code")


def _sha1_record(pcr: int, kind: int, digest: bytes, event: bytes) -> bytes:
    return (pcr.to_bytes(4, "little") + kind.to_bytes(4, "little") + digest
            + len(event).to_bytes(4, "little") + event)


def _refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        EventLog.parse(data)
    assert str(caught.value) == message


def test_a_crypto_agile_log() -> None:
    log = EventLog(SPEC, (RECORD,))
    data = log.to_bytes()
    header = _sha1_record(0, EventType.EV_NO_ACTION, bytes(20), SPEC.to_bytes())
    assert data == header + RECORD.to_event2(SPEC)
    parsed = EventLog.parse(data)
    assert parsed == log and parsed.is_crypto_agile
    assert parsed.bank_ids == (TPM_ALG_SHA256, TPM_ALG_SHA1)
    assert parsed.header_event() == PcrEvent(
        0, EventType.EV_NO_ACTION, ((TPM_ALG_SHA1, bytes(20)),), SPEC.to_bytes())


def test_a_legacy_sha1_log() -> None:
    first = _sha1_record(0, EventType.EV_S_CRTM_VERSION, b"\x01" * 20, b"v\0")
    second = _sha1_record(23, EventType.EV_POST_CODE, b"\x02" * 20, b"")
    log = EventLog.parse(first + second)
    assert log.spec_id is None and not log.is_crypto_agile
    assert log.bank_ids == (TPM_ALG_SHA1,) and log.header_event() is None
    assert log.events == (
        PcrEvent(0, EventType.EV_S_CRTM_VERSION, ((TPM_ALG_SHA1, b"\x01" * 20),), b"v\0"),
        PcrEvent(23, EventType.EV_POST_CODE, ((TPM_ALG_SHA1, b"\x02" * 20),), b""))
    assert log.to_bytes() == first + second
    # A legacy record cut short names the log, the field and its offset.
    cut = _sha1_record(1, EventType.EV_POST_CODE, bytes(20), b"abc")[:-1]
    _refused(first + cut, "TCG event log: event needs 3 bytes at offset 0x42, only 2 left")


def test_the_banks_of_a_log() -> None:
    assert banks_of(None) == (TPM_ALG_SHA1,)
    three = SpecIdEvent((AlgorithmSize(TPM_ALG_SHA384, 48), AlgorithmSize(TPM_ALG_SHA1, 20),
                         AlgorithmSize(TPM_ALG_SHA256, 32)))
    assert banks_of(three) == (TPM_ALG_SHA384, TPM_ALG_SHA1, TPM_ALG_SHA256)


def test_empty_or_cut_bytes_are_not_a_log() -> None:
    _refused(b"", "not an event log: empty input")
    with pytest.raises(FormatError) as caught:
        EventLog.parse(b"\0" * 10)
    assert str(caught.value).startswith("not an event log: ")


@pytest.mark.parametrize("pcr", [24, 0x1000, 0xFFFFFFFF])
def test_a_first_record_beyond_the_24_pcrs_is_not_a_log(pcr: int) -> None:
    _refused(_sha1_record(pcr, EventType.EV_POST_CODE, bytes(20), b""),
             f"not an event log: its first record names PCR {pcr} (a TPM has PCRs 0 to 23)")


def test_a_first_record_on_pcr_23_is_a_legacy_log() -> None:
    log = EventLog.parse(_sha1_record(23, EventType.EV_POST_CODE, bytes(20), b""))
    assert log.events[0].pcr_index == 23


@pytest.mark.parametrize(("pcr", "kind", "digest"), [
    (1, EventType.EV_NO_ACTION, bytes(20)),
    (0, EventType.EV_POST_CODE, bytes(20)),
    (0, EventType.EV_NO_ACTION, bytes(19) + b"\x01"),
    (0, EventType.EV_NO_ACTION, b"\x80" + bytes(19)),
])
def test_the_spec_id_record_is_pcr_0_no_action_zero_digest(pcr: int, kind: int,
                                                           digest: bytes) -> None:
    data = _sha1_record(pcr, kind, digest, SPEC.to_bytes()) + RECORD.to_event2(SPEC)
    _refused(data, "TCG event log: the Spec ID record must be PCR 0, EV_NO_ACTION, zero digest")


def test_a_vendor_info_written_after_the_header_record() -> None:
    # Some firmware counts vendorInfo outside the Spec ID record's event: the event ends at
    # vendorInfoSize and the bytes follow the record.
    spec = SpecIdEvent(SPEC.algorithms, vendor_info=b"VENDOR", vendor_info_outside_event=True)
    log = EventLog(spec, (RECORD,))
    data = log.to_bytes()
    head = _sha1_record(0, EventType.EV_NO_ACTION, bytes(20), spec.to_bytes())
    assert data == head + b"VENDOR" + RECORD.to_event2(spec)
    parsed = EventLog.parse(data)
    assert parsed == log and parsed.spec_id is not None
    assert parsed.spec_id.vendor_info == b"VENDOR" and parsed.spec_id.vendor_info_outside_event
    # Inside the event it is the usual layout.
    inside = EventLog(SpecIdEvent(SPEC.algorithms, vendor_info=b"VENDOR"), (RECORD,))
    assert EventLog.parse(inside.to_bytes()) == inside
    # Announced but cut short: refused, naming what is missing.
    _refused(head + b"VEN", "TCG event log: vendorInfo after the Spec ID record needs 6 bytes "
                            f"at offset {len(head):#x}, only 3 left")


def test_records_after_the_header_must_be_whole() -> None:
    data = EventLog(SPEC, (RECORD, RECORD)).to_bytes()
    assert len(EventLog.parse(data).events) == 2
    with pytest.raises(FormatError):
        EventLog.parse(data[:-1])
    assert EventLog.parse(EventLog(SPEC, ()).to_bytes()).events == ()
