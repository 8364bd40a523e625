"""The SVSM core protocol's decisions, one by one (AMD 58019 section 5): which versions it
offers, which calls it refuses, and for SVSM_CORE_PVALIDATE which requests and which pages."""

from __future__ import annotations

import pytest

from cvm.formats.svsm.pvalidate_request import (
    HEADER_LAYOUT,
    SIZE_2M,
    PvalidateEntry,
    PvalidateRequest,
)
from cvm.guest.svsm.core import CORE_PVALIDATE, CORE_QUERY_PROTOCOL, PROTOCOL_CORE, CoreProtocol
from cvm.guest.svsm.result import CallReply, SvsmResult

from .memory import GuestMemory

PAGE = 0x40000
OWN = 0x7000  # a page the SVSM keeps for itself in these tests


class Pages:
    """The SVSM's PVALIDATE as the protocol sees it: records each call, answers a result."""

    def __init__(self, failing: dict[int, SvsmResult] | None = None) -> None:
        self.calls: list[tuple[int, bool, bool]] = []
        self.failing = failing or {}

    def __call__(self, gpa: int, validate: bool, ignore_cf: bool) -> SvsmResult:
        self.calls.append((gpa, validate, ignore_cf))
        return self.failing.get(gpa, SvsmResult.SUCCESS)


def _core(memory: GuestMemory, pages: Pages | None = None,
          versions: dict[int, tuple[int, int]] | None = None) -> CoreProtocol:
    return CoreProtocol(versions if versions is not None else {0: (1, 1)}, memory.read,
                        memory.write, pages if pages is not None else Pages(),
                        lambda gpa: gpa - gpa % 0x1000 == OWN)


def _request(entries: list[PvalidateEntry], following: int = 0) -> bytes:
    return PvalidateRequest(tuple(entries), following).to_bytes()


def _header(memory: GuestMemory, gpa: int) -> dict[str, object]:
    return dict(HEADER_LAYOUT.unpack(memory.get(gpa, 8)))


# ---- SVSM_CORE_QUERY_PROTOCOL ------------------------------------------------------------
@pytest.mark.parametrize("version", [2, 3, 4])
def test_query_answers_highest_and_lowest_for_a_version_in_the_range(version: int) -> None:
    """RCX = protocol << 32 | version in; RCX = highest << 32 | lowest out, for any version
    from the lowest to the highest offered (both ends included)."""
    core = _core(GuestMemory(), versions={5: (2, 4)})
    reply = core.handle(CORE_QUERY_PROTOCOL, 5 << 32 | version)
    assert reply == CallReply(SvsmResult.SUCCESS, {"rcx": 4 << 32 | 2})


@pytest.mark.parametrize("rcx", [5 << 32 | 1, 5 << 32 | 5, 6 << 32 | 1, 6 << 32 | 0,
                                 5 << 32 | (1 << 32) - 1, 0x5_0000_0003 << 4])
def test_query_answers_zero_for_a_version_or_protocol_not_offered(rcx: int) -> None:
    """A version outside [lowest, highest], or a protocol not offered (even version 0), is
    answered with success and RCX = 0 (58019 Table 8)."""
    core = _core(GuestMemory(), versions={5: (2, 4)})
    assert core.handle(CORE_QUERY_PROTOCOL, rcx) == CallReply(SvsmResult.SUCCESS, {"rcx": 0})


def test_query_reads_the_version_from_the_low_32_bits_only() -> None:
    """Version = RCX bits 31:0, protocol = bits 63:32: the protocol's bits never count as a
    version."""
    core = _core(GuestMemory(), versions={1: (1, 1), 2: (1, 1)})
    assert core.handle(CORE_QUERY_PROTOCOL, 2 << 32 | 1).outputs == {"rcx": 1 << 32 | 1}
    assert core.handle(CORE_QUERY_PROTOCOL, 1 << 32 | 1).outputs == {"rcx": 1 << 32 | 1}
    assert core.handle(CORE_QUERY_PROTOCOL, 1 << 32 | 2).outputs == {"rcx": 0}


@pytest.mark.parametrize("call", [0, 2, 3, 4, 5, 7, 0xFFFF_FFFF])
def test_other_core_calls_are_unsupported(call: int) -> None:
    """REMAP_CA (0), vCPU creation and deletion (2, 3), memory deposit and withdrawal (4, 5)
    and anything past QUERY_PROTOCOL are refused, with no output and no memory touched."""
    memory = GuestMemory()
    memory.put(PAGE, _request([PvalidateEntry(0x30, True)]))
    pages = Pages()
    reply = _core(memory, pages).handle(call, PAGE)
    assert reply == CallReply(SvsmResult.ERR_UNSUPPORTED_CALL, {})
    assert pages.calls == [] and memory.reads == [] and memory.writes == []


def test_the_protocol_numbers() -> None:
    """58019 Table 5: the core protocol is 0, PVALIDATE call 1, QUERY_PROTOCOL call 6."""
    assert (PROTOCOL_CORE, CORE_PVALIDATE, CORE_QUERY_PROTOCOL) == (0, 1, 6)


# ---- SVSM_CORE_PVALIDATE: the request ---------------------------------------------------
@pytest.mark.parametrize("offset", [1, 4, 7])
def test_a_request_not_8_byte_aligned_is_an_invalid_address(offset: int) -> None:
    memory = GuestMemory()
    memory.put(PAGE, bytes(0x100))
    assert (_core(memory).handle(CORE_PVALIDATE, PAGE + offset)
            == CallReply(SvsmResult.ERR_INVALID_ADDRESS, {}))
    assert memory.reads == []


def test_a_request_the_svsm_cannot_read_is_an_invalid_address() -> None:
    memory = GuestMemory()
    reply = _core(memory).handle(CORE_PVALIDATE, PAGE)
    assert reply == CallReply(SvsmResult.ERR_INVALID_ADDRESS, {})
    assert memory.reads == [(PAGE, 8)]  # the header alone first


@pytest.mark.parametrize("header", [(2, 3), (0, 1), (512, 0), (0xFFFF, 0)])
def test_a_header_out_of_bounds_is_an_invalid_parameter(header: tuple[int, int]) -> None:
    """``next`` beyond ``entries``, or more entries than a page holds (511), is refused."""
    memory = GuestMemory()
    memory.put(PAGE, HEADER_LAYOUT.pack({"entries": header[0], "next": header[1]}))
    reply = _core(memory).handle(CORE_PVALIDATE, PAGE)
    assert reply == CallReply(SvsmResult.ERR_INVALID_PARAMETER, {})
    assert memory.writes == []


@pytest.mark.parametrize(("offset", "entries", "refused"), [
    (0xFF0, 1, False), (0xFF8, 1, True), (0xFE8, 2, False), (0xFF0, 2, True),
    (0, 511, False),
])
def test_a_request_may_end_at_its_page_end_but_not_cross_it(
        offset: int, entries: int, refused: bool) -> None:
    memory = GuestMemory()
    gpa = PAGE + offset
    memory.put(gpa, _request([PvalidateEntry(0x100 + i, True) for i in range(entries)]))
    pages = Pages()
    reply = _core(memory, pages).handle(CORE_PVALIDATE, gpa)
    if refused:
        assert reply == CallReply(SvsmResult.ERR_INVALID_PARAMETER, {})
        assert pages.calls == [] and memory.reads == [(gpa, 8)]
    else:
        assert reply == CallReply(SvsmResult.SUCCESS, {})
        assert len(pages.calls) == entries
        assert memory.reads == [(gpa, 8), (gpa, 8 + 8 * entries)]


def test_entries_the_svsm_cannot_read_are_an_invalid_address() -> None:
    """The header is readable, its entries are not (the SVSM reads them in a second step)."""
    memory = GuestMemory()
    memory.put(PAGE, _request([PvalidateEntry(0x30, True)]))
    memory.readable = [(PAGE, PAGE + 8)]
    pages = Pages()
    assert (_core(memory, pages).handle(CORE_PVALIDATE, PAGE)
            == CallReply(SvsmResult.ERR_INVALID_ADDRESS, {}))
    assert pages.calls == [] and memory.writes == []


def test_an_entry_with_reserved_bits_is_an_invalid_parameter() -> None:
    memory = GuestMemory()
    memory.put(PAGE, HEADER_LAYOUT.pack({"entries": 1, "next": 0})
               + (0x30 << 12 | 0x10 | 0x4).to_bytes(8, "little"))
    pages = Pages()
    assert (_core(memory, pages).handle(CORE_PVALIDATE, PAGE)
            == CallReply(SvsmResult.ERR_INVALID_PARAMETER, {}))
    assert pages.calls == [] and memory.writes == []


# ---- SVSM_CORE_PVALIDATE: the pages -------------------------------------------------------
def test_every_entry_is_done_in_order_with_its_action_and_next_written_back() -> None:
    memory = GuestMemory()
    memory.put(PAGE, _request([PvalidateEntry(0x30, True), PvalidateEntry(0x31, False),
                               PvalidateEntry(0x32, True, ignore_cf=True)]))
    pages = Pages()
    assert _core(memory, pages).handle(CORE_PVALIDATE, PAGE) == CallReply(SvsmResult.SUCCESS)
    assert pages.calls == [(0x30000, True, False), (0x31000, False, False),
                           (0x32000, True, True)]
    assert memory.writes == [(PAGE, HEADER_LAYOUT.pack({"entries": 3, "next": 3}))]
    assert memory.get(PAGE + 8, 24) == _request([PvalidateEntry(0x30, True),
                                                 PvalidateEntry(0x31, False),
                                                 PvalidateEntry(0x32, True, ignore_cf=True)])[8:]


def test_the_entries_before_next_are_not_done_again() -> None:
    memory = GuestMemory()
    memory.put(PAGE, _request([PvalidateEntry(0x30 + i, True) for i in range(4)], following=2))
    pages = Pages()
    assert _core(memory, pages).handle(CORE_PVALIDATE, PAGE).result is SvsmResult.SUCCESS
    assert pages.calls == [(0x32000, True, False), (0x33000, True, False)]
    assert _header(memory, PAGE) == {"entries": 4, "next": 4}


def test_a_request_already_done_changes_nothing_and_succeeds() -> None:
    memory = GuestMemory()
    memory.put(PAGE, _request([PvalidateEntry(0x30, True)], following=1))
    pages = Pages()
    assert _core(memory, pages).handle(CORE_PVALIDATE, PAGE) == CallReply(SvsmResult.SUCCESS)
    assert pages.calls == [] and _header(memory, PAGE) == {"entries": 1, "next": 1}


def test_the_first_failure_stops_and_next_names_the_failed_entry() -> None:
    memory = GuestMemory()
    memory.put(PAGE, _request([PvalidateEntry(0x30 + i, True) for i in range(4)], following=1))
    pages = Pages({0x32000: SvsmResult.ERR_PVALIDATE_FAIL_UNCHANGED})
    reply = _core(memory, pages).handle(CORE_PVALIDATE, PAGE)
    assert reply == CallReply(SvsmResult.ERR_PVALIDATE_FAIL_UNCHANGED, {})
    assert pages.calls == [(0x31000, True, False), (0x32000, True, False)]
    assert _header(memory, PAGE) == {"entries": 4, "next": 2}


@pytest.mark.parametrize("refused", [PvalidateEntry(0x33, True, page_size=SIZE_2M),
                                     PvalidateEntry(OWN >> 12, False),
                                     PvalidateEntry(OWN >> 12, True)])
def test_a_2m_page_or_an_svsm_page_stops_the_request_untouched(refused: PvalidateEntry) -> None:
    """A 2 MiB entry, or a page of the SVSM's own (validate or rescind), is never handed to
    PVALIDATE: the request stops there with SVSM_ERR_INVALID_PARAMETER, ``next`` on it."""
    memory = GuestMemory()
    memory.put(PAGE, _request([PvalidateEntry(0x30, True), refused, PvalidateEntry(0x34, True)]))
    pages = Pages()
    reply = _core(memory, pages).handle(CORE_PVALIDATE, PAGE)
    assert reply == CallReply(SvsmResult.ERR_INVALID_PARAMETER, {})
    assert pages.calls == [(0x30000, True, False)]
    assert _header(memory, PAGE) == {"entries": 3, "next": 1}


def test_a_request_it_cannot_write_back_is_an_invalid_address() -> None:
    """The pages were done; ``next`` could not be written, so the caller cannot know it."""
    memory = GuestMemory()
    memory.put(PAGE, _request([PvalidateEntry(0x30, True)]))
    memory.writable = []
    pages = Pages()
    assert (_core(memory, pages).handle(CORE_PVALIDATE, PAGE)
            == CallReply(SvsmResult.ERR_INVALID_ADDRESS, {}))
    assert pages.calls == [(0x30000, True, False)]


def test_an_empty_request_succeeds_and_writes_its_header_back() -> None:
    memory = GuestMemory()
    memory.put(PAGE, _request([]))
    assert _core(memory).handle(CORE_PVALIDATE, PAGE) == CallReply(SvsmResult.SUCCESS, {})
    assert memory.writes == [(PAGE, HEADER_LAYOUT.pack({"entries": 0, "next": 0}))]
