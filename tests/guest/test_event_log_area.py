"""The event log area: each store leaves exactly the log's wire form after its size, whether it
appends the new records or rewrites the whole log."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, StateError
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.spec_id_event import AlgorithmSize, SpecIdEvent
from cvm.guest.boot.event_log_area import EventLogArea
from cvm.hardware.memory.dram import PAGE_SIZE

GPA = 0x3000
SPEC = SpecIdEvent((AlgorithmSize(0x000B, 32),))


class _Cpu:
    """Guest memory as a bytearray, recording each write (address, size)."""

    def __init__(self) -> None:
        self.memory = bytearray(0x10000)
        self.writes: list[tuple[int, int]] = []

    @property
    def written(self) -> int:
        return sum(size for _, size in self.writes)

    def write(self, gpa: int, data: bytes) -> None:
        self.memory[gpa : gpa + len(data)] = data
        self.writes.append((gpa, len(data)))

    def read(self, gpa: int, size: int) -> bytes:
        return bytes(self.memory[gpa : gpa + size])


class _Kernel:
    def __init__(self) -> None:
        self.cpu = _Cpu()


def _event(n: int, size: int = 8) -> PcrEvent:
    return PcrEvent(n % 8, 0x0D, ((0x000B, bytes([n]) * 32),), bytes([n]) * size)


def _area(pages: int = 2) -> tuple[EventLogArea, _Cpu]:
    kernel = _Kernel()
    area = EventLogArea(kernel, GPA, pages)  # type: ignore[arg-type]
    area.reserve()
    return area, kernel.cpu


def _held(cpu: _Cpu) -> bytes:
    size = int.from_bytes(cpu.read(GPA, 4), "little")
    return cpu.read(GPA + 4, size)


def test_a_growing_log_is_appended_and_the_area_holds_it_whole() -> None:
    area, cpu = _area(pages=4)
    events: list[PcrEvent] = []
    for n in range(60):
        events.append(_event(n, size=200))
        log = EventLog(SPEC, tuple(events))
        before, start = len(cpu.writes), area.stored
        cpu.memory[GPA + 4 + len(log.to_bytes()):] = b"\xee" * (0x10000 - GPA - 4 - len(
            log.to_bytes()))
        area.store(log)
        assert _held(cpu) == log.to_bytes()
        assert area.load() == log
        assert set(cpu.memory[GPA + 4 + area.stored:]) == {0xEE}  # nothing past the log
        record = len(events[-1].to_event2(SPEC))
        if not n:
            continue
        if start + 4 < 2 * PAGE_SIZE:  # one write: the size through the new record
            assert cpu.writes[before:] == [(GPA, 4 + start + record)]
        else:  # a whole page between them: the new record, then the size
            assert cpu.writes[before:] == [(GPA + 4 + start, record), (GPA, 4)]
    assert area.stored == len(log.to_bytes()) > 3 * PAGE_SIZE


def test_a_store_of_the_same_log_writes_the_size_only() -> None:
    area, cpu = _area()
    log = EventLog(SPEC, (_event(1), _event(2)))
    area.store(log)
    before = len(cpu.writes)
    area.store(EventLog(SPEC, log.events))
    assert cpu.writes[before:] == [(GPA, 4)]
    assert _held(cpu) == log.to_bytes()


def test_reserve_starts_the_area_again() -> None:
    area, cpu = _area()
    area.store(EventLog(SPEC, (_event(1), _event(2))))
    area.reserve()
    assert _held(cpu) == b""
    log = EventLog(SPEC, (_event(1), _event(2), _event(3)))
    area.store(log)
    assert _held(cpu) == log.to_bytes()


def test_a_log_that_does_not_extend_the_stored_one_is_written_whole() -> None:
    area, cpu = _area()
    area.store(EventLog(SPEC, (_event(1), _event(2), _event(3))))
    for log in (EventLog(SPEC, (_event(1), _event(4))),            # other records
                EventLog(SPEC, (_event(5),)),                       # a shorter log
                EventLog(SpecIdEvent((AlgorithmSize(0x000B, 32),)), (_event(5), _event(6))),
                EventLog(None, (PcrEvent(0, 0x0D, ((0x0004, bytes(20)),), b"sha1 log"),))):
        area.store(log)
        assert _held(cpu) == log.to_bytes()
    area.store(EventLog(SPEC, ()))
    assert _held(cpu) == EventLog(SPEC, ()).to_bytes()
    area.store(EventLog(SPEC, (_event(7),)))
    assert _held(cpu) == EventLog(SPEC, (_event(7),)).to_bytes()


def test_a_log_beyond_the_area_is_refused_and_the_area_kept() -> None:
    area, cpu = _area(pages=1)
    events = [_event(0)]
    area.store(EventLog(SPEC, tuple(events)))
    kept = _held(cpu)
    while len(EventLog(SPEC, tuple(events)).to_bytes()) + 4 <= PAGE_SIZE:
        events.append(_event(len(events) % 256, size=100))
    with pytest.raises(StateError, match=r"^event log of \d+ bytes exceeds its 4096-byte area$"):
        area.store(EventLog(SPEC, tuple(events)))
    assert _held(cpu) == kept
    events.pop()
    area.store(EventLog(SPEC, tuple(events)))  # the largest log that fits (4 + size <= area)
    assert _held(cpu) == EventLog(SPEC, tuple(events)).to_bytes()


def test_the_first_store_after_reserve_is_whole() -> None:
    area, cpu = _area()
    log = EventLog(SPEC, (_event(1),))
    area.store(log)
    assert cpu.written == 4 + 4 + len(log.to_bytes())  # reserve's size, the log, its size


def test_load_parses_what_the_area_holds_now() -> None:
    area, cpu = _area()
    first = EventLog(SPEC, (_event(1), _event(2)))
    area.store(first)
    assert area.read() == first.to_bytes()
    loaded = area.load()
    assert loaded == first and area.load() is loaded  # the same bytes: the same log
    header = len(EventLog(SPEC, ()).to_bytes())
    cpu.memory[GPA + 4 + header] ^= 0x01  # the first record's PCR index, changed in memory
    changed = area.load()
    assert changed != first and changed.events[0].pcr_index == first.events[0].pcr_index ^ 1
    cpu.memory[GPA : GPA + 4] = (len(first.to_bytes()) - 1).to_bytes(4, "little")
    with pytest.raises(FormatError):
        area.load()
