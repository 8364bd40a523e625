"""TCG_PCR_EVENT2 (PFP 1.05 r23 Table 20): the exact bytes written, the records refused, and
the whole-record reader against the field-by-field one."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.spec_id_event import AlgorithmSize, SpecIdEvent
from cvm.wire import Reader

SPEC = SpecIdEvent((AlgorithmSize(0x0004, 20), AlgorithmSize(0x000B, 32)))


def test_event2_bytes_field_by_field() -> None:
    event = PcrEvent(7, 0x800000E0, ((0x000B, b"\x0b" * 32), (0x0004, b"\x04" * 20)), b"data")
    assert event.to_event2(SPEC) == (
        b"\x07\0\0\0" + b"\xe0\0\0\x80" + b"\x02\0\0\0"
        + b"\x0b\x00" + b"\x0b" * 32 + b"\x04\x00" + b"\x04" * 20
        + b"\x04\0\0\0" + b"data"
    )
    assert PcrEvent(0, 3, (), b"").to_event2(SPEC) == bytes(4) + b"\x03\0\0\0" + bytes(8)


@pytest.mark.parametrize(
    ("digests", "message"),
    [
        (((0x000B, bytes(31)),), "digest for bank 0x000b must be 32 bytes"),
        (((0x000C, bytes(48)),), "0x000c"),
    ],
)
def test_event2_refuses_digests_the_spec_does_not_allow(
    digests: tuple[tuple[int, bytes], ...], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        PcrEvent(0, 0x0D, digests, b"").to_event2(SPEC)


def test_event2_refuses_a_bank_id_beyond_sixteen_bits() -> None:
    wide = SpecIdEvent((AlgorithmSize(0x1_000B, 32),))
    with pytest.raises(UsageError, match="does not fit in 2 bytes"):
        PcrEvent(0, 0x0D, ((0x1_000B, bytes(32)),), b"").to_event2(wide)


def _field_by_field(data: bytes, offset: int, spec: SpecIdEvent) -> list[PcrEvent] | str:
    reader = Reader(data, "TCG event log")
    reader.take(offset)
    records = []
    try:
        while reader.remaining:
            records.append(PcrEvent.read_event2(reader, spec))
    except FormatError as error:
        return f"{type(error).__name__}: {error}"
    return records


def _whole_records(data: bytes, offset: int, spec: SpecIdEvent) -> list[PcrEvent] | str:
    try:
        return PcrEvent.read_event2_records(data, offset, spec)
    except FormatError as error:
        return f"{type(error).__name__}: {error}"


LOGS = ("realboot/eventlog.bin", "tpm/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin",
        "tpm/go-attestation/sb_cert_eventlog")


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_whole_records_read_as_field_by_field(vectors: Path, data: st.DataObject) -> None:
    real = (vectors / data.draw(st.sampled_from(LOGS))).read_bytes()
    log = EventLog.parse(real)
    assert log.spec_id is not None
    header = len(log.header_event().to_sha1_format())  # type: ignore[union-attr]
    blob = bytearray(real)
    for _ in range(data.draw(st.integers(0, 6))):
        where = data.draw(st.integers(header, len(blob) - 1))
        blob[where] = data.draw(st.sampled_from([0, 1, 2, 3, 4, 0x0B, 0x0C, 0x20, 0xFF,
                                                 data.draw(st.integers(0, 255))]))
    cut = data.draw(st.integers(header, len(blob)))
    sample = bytes(blob[:cut])
    spec = data.draw(st.sampled_from([log.spec_id, SpecIdEvent((AlgorithmSize(0x0B, 32),)),
                                      SpecIdEvent((AlgorithmSize(0x04, 20),))]))
    assert _whole_records(sample, header, spec) == _field_by_field(sample, header, spec)


def test_whole_records_of_a_real_log_and_its_errors(vectors: Path) -> None:
    real = (vectors / "realboot/eventlog.bin").read_bytes()
    log = EventLog.parse(real)
    assert log.spec_id is not None
    header = len(real) - len(b"".join(e.to_event2(log.spec_id) for e in log.events))
    assert PcrEvent.read_event2_records(real, header, log.spec_id) == list(log.events)
    first = log.events[0].to_event2(log.spec_id)
    short = real[: header + len(first) - 1]
    with pytest.raises(FormatError, match=r"needs \d+ bytes at offset"):
        PcrEvent.read_event2_records(short, header, log.spec_id)
    many = real[:header] + (9).to_bytes(4, "little").join([first[:8], first[12:]])
    with pytest.raises(FormatError, match="digest count 9 exceeds"):
        PcrEvent.read_event2_records(many, header, log.spec_id)
    twice = (bytes(8) + b"\x02\0\0\0" + (b"\x0b\x00" + bytes(32)) * 2 + bytes(4))
    with pytest.raises(FormatError, match=r"a bank appears twice .* \(at offset 0x54\)$"):
        PcrEvent.read_event2_records(twice, 0, SPEC)
