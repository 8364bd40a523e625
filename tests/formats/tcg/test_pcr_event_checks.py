"""One event-log record (PFP 1.05 r23 Tables 19 and 20) check by check: the u32 limits of a
record, its digest per bank, each field the readers name when a record is cut, the digest count
against the banks of the log, and each refusal of the writers with its message."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from cvm.errors import FormatError, TruncatedError, UsageError
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.spec_id_event import AlgorithmSize, SpecIdEvent
from cvm.wire import Reader

SPEC = SpecIdEvent((AlgorithmSize(0x0004, 20), AlgorithmSize(0x000B, 32)))
RECORD = PcrEvent(7, 0x800000E0, ((0x000B, b"\x0b" * 32), (0x0004, b"\x04" * 20)), b"data")


def _usage(message: str) -> AbstractContextManager[pytest.ExceptionInfo[UsageError]]:
    return pytest.raises(UsageError, match=f"^{message}$")


@pytest.mark.parametrize(("field", "name"), [(0, "pcrIndex"), (1, "eventType")])
def test_pcr_index_and_event_type_are_u32(field: int, name: str) -> None:
    for good in (0, 0xFFFFFFFF):
        values = [5, 5]
        values[field] = good
        assert PcrEvent(values[0], values[1], (), b"").to_event2(SPEC)[:8] == (
            values[0].to_bytes(4, "little") + values[1].to_bytes(4, "little"))
    for bad in (-1, 0x1_0000_0000):
        values = [5, 5]
        values[field] = bad
        with _usage(f"event record: {name} {bad} does not fit in a u32"):
            PcrEvent(values[0], values[1], (), b"")


def test_a_bank_listed_twice_in_a_record_is_refused() -> None:
    with _usage(r"event record: a bank appears twice among \[11, 4, 11\]"):
        PcrEvent(0, 1, ((11, bytes(32)), (4, bytes(20)), (11, bytes(32))), b"")


def test_the_digest_of_a_bank() -> None:
    assert RECORD.digest(0x000B) == b"\x0b" * 32
    assert RECORD.digest(0x0004) == b"\x04" * 20
    assert RECORD.digest(0x000C) is None
    assert PcrEvent(0, 1, (), b"").digest(0x0004) is None


def test_the_sha1_format_bytes_and_reading_them_back() -> None:
    record = PcrEvent(0xFFFFFFFF, 0x80000001, ((0x0004, b"\x11" * 20),), b"ev")
    data = record.to_sha1_format()
    assert data == b"\xff" * 4 + b"\x01\0\0\x80" + b"\x11" * 20 + b"\x02\0\0\0" + b"ev"
    reader = Reader(data + b"more", "log")
    assert PcrEvent.read_sha1_format(reader) == record
    assert reader.remaining == 4


@pytest.mark.parametrize(("cut", "field", "at", "size"), [
    (0, "pcrIndex", 0, 4), (3, "pcrIndex", 0, 4), (4, "eventType", 4, 4),
    (8, "digest", 8, 20), (27, "digest", 8, 20), (28, "eventDataSize", 28, 4),
    (32, "event", 32, 2), (33, "event", 32, 2),
])
def test_a_cut_sha1_format_record_names_its_field(cut: int, field: str, at: int,
                                                  size: int) -> None:
    data = PcrEvent(1, 2, ((0x0004, bytes(20)),), b"ev").to_sha1_format()
    with pytest.raises(TruncatedError) as caught:
        PcrEvent.read_sha1_format(Reader(data[:cut], "TCG event log"))
    assert str(caught.value) == (f"TCG event log: {field} needs {size} bytes at offset "
                                 f"{at:#x}, only {cut - at} left")


@pytest.mark.parametrize(("digests", "message"), [
    ((), "a SHA-1 format record carries exactly one SHA-1 digest"),
    (((0x0004, bytes(20)), (0x000B, bytes(32))),
     "a SHA-1 format record carries exactly one SHA-1 digest"),
    (((0x000B, bytes(20)),), "a SHA-1 format record carries exactly one SHA-1 digest"),
    (((0x0004, bytes(19)),), "a SHA-1 digest is 20 bytes"),
    (((0x0004, bytes(21)),), "a SHA-1 digest is 20 bytes"),
])
def test_the_sha1_format_refuses_anything_but_one_sha1_digest(
    digests: tuple[tuple[int, bytes], ...], message: str
) -> None:
    with _usage(message):
        PcrEvent(0, 1, digests, b"").to_sha1_format()


def test_an_event2_record_read_back() -> None:
    data = RECORD.to_event2(SPEC)
    reader = Reader(data + b"next", "log")
    assert PcrEvent.read_event2(reader, SPEC) == RECORD
    assert reader.remaining == 4


@pytest.mark.parametrize(("cut", "field", "at", "size"), [
    (0, "pcrIndex", 0, 4), (4, "eventType", 4, 4), (8, "digests.count", 8, 4),
    (12, "digests.hashAlg", 12, 2), (13, "digests.hashAlg", 12, 2), (14, "digest", 14, 32),
    (45, "digest", 14, 32), (46, "digests.hashAlg", 46, 2), (48, "digest", 48, 20),
    (68, "eventSize", 68, 4), (72, "event", 72, 4), (75, "event", 72, 4),
])
def test_a_cut_event2_record_names_its_field(cut: int, field: str, at: int, size: int) -> None:
    data = RECORD.to_event2(SPEC)
    message = (f"TCG event log: {field} needs {size} bytes at offset {at:#x}, "
               f"only {cut - at} left")
    with pytest.raises(TruncatedError) as caught:
        PcrEvent.read_event2(Reader(data[:cut], "TCG event log"), SPEC)
    assert str(caught.value) == message
    # The whole-record reader says the same, from where the record starts (nothing at all
    # is no record).
    if not cut:
        assert PcrEvent.read_event2_records(b"prefix", 6, SPEC) == []
        return
    with pytest.raises(TruncatedError) as caught:
        PcrEvent.read_event2_records(b"prefix" + data[:cut], 6, SPEC)
    assert str(caught.value) == message.replace(f"{at:#x}", f"{at + 6:#x}")


def test_a_digest_count_up_to_the_banks_of_the_log() -> None:
    data = RECORD.to_event2(SPEC)
    assert PcrEvent.read_event2(Reader(data, "log"), SPEC).digests == RECORD.digests
    three = data[:8] + (3).to_bytes(4, "little") + data[12:]
    with pytest.raises(FormatError) as caught:
        PcrEvent.read_event2(Reader(three, "TCG event log"), SPEC)
    assert str(caught.value) == ("TCG event log: digest count 3 exceeds the 2 banks of the log "
                                 "(at offset 0xc)")
    with pytest.raises(FormatError) as caught:
        PcrEvent.read_event2_records(three, 0, SPEC)
    assert str(caught.value) == ("TCG event log: digest count 3 exceeds the 2 banks of the log "
                                 "(at offset 0xc)")


def test_a_record_with_a_bank_the_log_omits_is_refused() -> None:
    record = PcrEvent(1, 2, ((0x000C, bytes(48)),), b"").to_event2(
        SpecIdEvent((AlgorithmSize(0x000C, 48),)))
    for read in (lambda: PcrEvent.read_event2(Reader(record, "log"), SPEC),
                 lambda: PcrEvent.read_event2_records(record, 0, SPEC)):
        with pytest.raises(FormatError) as caught:
            read()
        assert str(caught.value) == "event record uses algorithm 0x000c the Spec ID event omits"


def test_whole_records_name_the_input_they_were_given() -> None:
    cut = RECORD.to_event2(SPEC)[:-1]
    with pytest.raises(TruncatedError) as caught:
        PcrEvent.read_event2_records(cut, 0, SPEC, "the attester's log")
    assert str(caught.value) == ("the attester's log: event needs 4 bytes at offset 0x48, "
                                 "only 3 left")
    # Several well-formed records, then a count of zero, an empty event, and the end.
    empty = PcrEvent(0xFFFFFFFF, 0xFFFFFFFF, (), b"")
    data = b"skip" + RECORD.to_event2(SPEC) + empty.to_event2(SPEC) + RECORD.to_event2(SPEC)
    assert PcrEvent.read_event2_records(data, 4, SPEC) == [RECORD, empty, RECORD]
    assert PcrEvent.read_event2_records(data, len(data), SPEC) == []


def test_event2_writes_only_digests_the_log_allows() -> None:
    with _usage("digest for bank 0x0004 must be 20 bytes"):
        PcrEvent(0, 1, ((0x0004, bytes(21)),), b"").to_event2(SPEC)
    with _usage("event record uses algorithm 0x000c the Spec ID event omits"):
        PcrEvent(0, 1, ((0x000C, bytes(48)),), b"").to_event2(SPEC)


@pytest.mark.parametrize("alg_id", [0, 0xFFFF])
def test_event2_writes_every_sixteen_bit_bank(alg_id: int) -> None:
    spec = SpecIdEvent((AlgorithmSize(alg_id, 3),))
    data = PcrEvent(0, 1, ((alg_id, b"abc"),), b"").to_event2(spec)
    assert data[12:17] == alg_id.to_bytes(2, "little") + b"abc"
    assert PcrEvent.read_event2(Reader(data, "log"), spec).digests == ((alg_id, b"abc"),)


@pytest.mark.parametrize("alg_id", [-1, 0x1_0000])
def test_event2_refuses_a_bank_outside_sixteen_bits(alg_id: int) -> None:
    spec = SpecIdEvent((AlgorithmSize(alg_id, 3),))
    with _usage(f"value {alg_id} does not fit in 2 bytes"):
        PcrEvent(0, 1, ((alg_id, b"abc"),), b"").to_event2(spec)


def _no_field_by_field(reader: Reader, spec: SpecIdEvent) -> PcrEvent:
    raise AssertionError("a well-formed record was read field by field")


@pytest.mark.parametrize("log", ["realboot/eventlog.bin",
                                 "tpm/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin"])
def test_well_formed_records_are_read_whole(vectors: Path, log: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A log the attester sends is read a whole record at a time; the field-by-field reader is
    only for the record that is malformed (it says what is wrong)."""
    real = EventLog.parse((vectors / log).read_bytes())
    assert real.spec_id is not None
    # Every bank in every record (count == banks), a record with no digest and an empty event
    # last, ending exactly at the end of the data.
    empty = PcrEvent(9, 3, (), b"")
    data = b"".join(e.to_event2(real.spec_id) for e in real.events) + empty.to_event2(
        real.spec_id)
    monkeypatch.setattr(PcrEvent, "read_event2", _no_field_by_field)
    records = PcrEvent.read_event2_records(data, 0, real.spec_id)
    assert records == [*real.events, empty]
    assert all(len(r.digests) == len(real.spec_id.algorithms) for r in real.events)
    # A malformed record is handed to the field-by-field reader.
    with pytest.raises(AssertionError, match="field by field"):
        PcrEvent.read_event2_records(data[:-1], 0, real.spec_id)
