"""The event log area's bounds and write paths, at their edges."""

from __future__ import annotations

import pytest
from tests.guest.test_event_log_area import GPA, SPEC, _area, _event, _held

from cvm.errors import StateError
from cvm.formats.tcg.event_log import EventLog
from cvm.hardware.memory.dram import PAGE_SIZE


def _log_of_exactly(size: int) -> EventLog:
    """A log whose wire form is ``size`` bytes (its last event's data sized to fit)."""
    base = EventLog(SPEC, (_event(1, size=0),)).to_bytes()
    return EventLog(SPEC, (_event(1, size=size - len(base)),))


def test_a_log_that_fills_the_area_exactly_fits_and_one_byte_more_does_not() -> None:
    area, cpu = _area(pages=1)
    full = _log_of_exactly(PAGE_SIZE - 4)
    area.store(full)
    assert _held(cpu) == full.to_bytes() and area.read() == full.to_bytes()
    area.reserve()
    with pytest.raises(StateError, match=r"^event log of 4093 bytes exceeds its 4096-byte area$"):
        area.store(_log_of_exactly(PAGE_SIZE - 3))


def test_the_os_refuses_a_size_field_beyond_the_area() -> None:
    area, cpu = _area(pages=1)
    cpu.write(GPA, (PAGE_SIZE - 4).to_bytes(4, "little"))
    assert len(area.read()) == PAGE_SIZE - 4
    cpu.write(GPA, (PAGE_SIZE - 3).to_bytes(4, "little"))
    with pytest.raises(StateError) as refused:
        area.read()
    assert str(refused.value) == "the event log area is corrupt: its size exceeds the area"


def test_a_new_or_reserved_area_holds_nothing() -> None:
    area, cpu = _area()
    assert area.stored == 0 and _held(cpu) == b""
    area.store(EventLog(SPEC, (_event(1),)))
    area.reserve()
    assert area.stored == 0 and _held(cpu) == b""


def test_a_log_rewritten_whole_across_pages_is_intact() -> None:
    area, cpu = _area(pages=3)
    area.store(EventLog(SPEC, (_event(1),)))
    other = EventLog(SPEC, tuple(_event(n, size=300) for n in range(2, 30)))  # not an extension
    assert len(other.to_bytes()) > 2 * PAGE_SIZE
    area.store(other)
    assert _held(cpu) == other.to_bytes() and area.stored == len(other.to_bytes())
