"""SNP_LAUNCH_UPDATE over a run of pages: the same digest, encryption and RMP states as one
command per page, and a refused page ends the run with the pages before it launched."""

from __future__ import annotations

import pytest

from cvm.errors import StatusError, UsageError
from cvm.formats.snp.page_info import ZERO_DIGEST, PageInfo, PageType, contents_digest, extend
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.psp.launch_update import launch_pages, page_runs
from cvm.hardware.psp.status import SevStatus
from cvm.host.launch import SnpLaunchConfig, _Launcher
from cvm.host.vmm import Hypervisor

PAGE = 0x1000
ASID = 5


def _pages(hv: Hypervisor, count: int, order: list[int] | None = None) -> list[int]:
    """``count`` pre-guest pages of the guest (in ``order`` of the pages taken), the n-th holding
    bytes n+1 at GPA 0x10000 + n pages."""
    taken = hv.allocate_pages(count)
    spas = [taken[index] for index in order] if order is not None else taken
    for index, spa in enumerate(spas):
        hv.machine.host_write(spa, bytes([index + 1]) * PAGE)
        hv.machine.rmp.rmpupdate(spa, assigned=True, asid=ASID, gpa=0x10000 + index * PAGE)
    return spas


def _start(hv: Hypervisor, psp: SecureProcessor) -> int:
    hv.machine.engine.activate(ASID)
    return psp.snp_launch_start(ASID, 0x30000)


def _expected(kind: PageType, count: int, gpa: int = 0x10000) -> bytes:
    digest = ZERO_DIGEST
    for index in range(count):
        digest = extend(digest, kind, gpa + index * PAGE, bytes([index + 1]) * PAGE)
    return digest


@pytest.mark.parametrize("kind", [PageType.NORMAL, PageType.ZERO, PageType.UNMEASURED])
def test_a_run_equals_one_command_per_page(
    platform: tuple[Hypervisor, SecureProcessor], kind: PageType
) -> None:
    hv, psp = platform
    handle = _start(hv, psp)
    spas = _pages(hv, 5, [0, 1, 3, 2, 4])  # three runs of consecutive system pages
    psp.snp_launch_update_pages(handle, spas, kind)
    assert psp.guest_measurement(handle) == _expected(kind, 5)
    for index, spa in enumerate(spas):
        entry = hv.machine.rmp.entry(spa)
        assert entry.validated and entry.asid == ASID and entry.gpa == 0x10000 + index * PAGE
        plain = bytes(PAGE) if kind is PageType.ZERO else bytes([index + 1]) * PAGE
        assert hv.machine.engine.read(ASID, spa, PAGE) == plain
        assert hv.machine.host_read(spa, PAGE) != plain
    assert psp._guests[handle].pages == 5


@pytest.mark.parametrize(
    ("spoil", "status"),
    [
        ("unassigned", SevStatus.INVALID_PAGE_STATE),
        ("validated", SevStatus.INVALID_PAGE_STATE),
        ("foreign", SevStatus.INVALID_PAGE_OWNER),
        ("twice", SevStatus.INVALID_PAGE_STATE),
        ("unaligned", SevStatus.INVALID_PARAM),
        ("outside", SevStatus.INVALID_PARAM),
    ],
)
def test_a_refused_page_ends_the_run(
    platform: tuple[Hypervisor, SecureProcessor], spoil: str, status: SevStatus
) -> None:
    hv, psp = platform
    handle = _start(hv, psp)
    spas = _pages(hv, 4)
    machine = hv.machine
    if spoil == "unassigned":
        machine.rmp.rmpupdate(spas[2], assigned=False)
    elif spoil == "validated":
        machine.rmp.firmware_assign(spas[2], ASID, 0x12000)
    elif spoil == "foreign":
        machine.rmp.rmpupdate(spas[2], assigned=True, asid=ASID + 1, gpa=0x12000)
    elif spoil == "twice":
        spas[2] = spas[0]
    elif spoil == "unaligned":
        spas[2] += 8
    else:
        spas[2] = machine.dram.size_bytes
    with pytest.raises(StatusError) as refused:
        psp.snp_launch_update_pages(handle, spas, PageType.NORMAL)
    assert refused.value.code == status
    command, reason = str(refused.value).split(": ", 1)
    assert command == f"SNP_LAUNCH_UPDATE failed with {status.name} ({status:#x})"
    if status is SevStatus.INVALID_PARAM:  # the machine's own words for the address
        with pytest.raises(UsageError) as bad_address:
            machine.check_page(spas[2])
        assert reason == str(bad_address.value)
    else:
        owner = "this guest's" if spoil == "foreign" else "pre-guest"
        assert reason == f"{spas[2]:#x} is not {owner}"
    assert psp.guest_measurement(handle) == _expected(PageType.NORMAL, 2)
    assert [machine.rmp.entry(spa).validated for spa in spas[:2]] == [True, True]
    assert psp._guests[handle].pages == 2
    if spoil not in ("twice", "unaligned", "outside", "validated"):
        assert not machine.rmp.entry(spas[2]).validated
    assert not machine.rmp.entry(spas[3]).validated  # after the refusal: untouched
    assert machine.host_read(spas[3], PAGE) == b"\x04" * PAGE


def test_a_run_outside_launch_or_of_an_unknown_type_is_refused(
    platform: tuple[Hypervisor, SecureProcessor],
) -> None:
    hv, psp = platform
    handle = _start(hv, psp)
    spas = _pages(hv, 2)
    with pytest.raises(StatusError) as unknown:
        psp.snp_launch_update_pages(handle, spas, 9)
    assert unknown.value.code == SevStatus.INVALID_PARAM
    with pytest.raises(StatusError) as no_guest:
        psp.snp_launch_update_pages(handle + 1, spas, PageType.NORMAL)
    assert no_guest.value.code == SevStatus.INVALID_GUEST
    assert not any(hv.machine.rmp.entry(spa).validated for spa in spas)
    assert psp.guest_measurement(handle) == ZERO_DIGEST


def test_firmware_filled_types_go_one_page_at_a_time(
    platform: tuple[Hypervisor, SecureProcessor],
) -> None:
    hv, psp = platform
    handle = _start(hv, psp)
    spas = _pages(hv, 2)
    psp.snp_launch_update_pages(handle, spas, PageType.SECRETS)  # the firmware fills them
    expected = extend(extend(ZERO_DIGEST, PageType.SECRETS, 0x10000), PageType.SECRETS, 0x11000)
    assert psp.guest_measurement(handle) == expected
    assert hv.machine.engine.read(ASID, spas[1], PAGE) != b"\x02" * PAGE
    ctx = psp._guests[handle]
    with pytest.raises(UsageError, match=r"^CPUID pages are launched one at a time$"):
        launch_pages(hv.machine, ctx, [(spas[0], 0x10000)], PageType.CPUID, False)


def test_page_runs_cut_where_system_pages_stop_following() -> None:
    pages = [(0x1000, 0), (0x2000, 1), (0x4000, 2), (0x5000, 3), (0x3000, 4)]
    assert page_runs(pages) == [pages[:2], pages[2:4], pages[4:]]
    assert page_runs([]) == []


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [0, 2, 1, 3], [1, 0, 2, 3]])
def test_staged_pages_hold_their_own_data_whatever_order_the_host_reuses_pages_in(
    platform: tuple[Hypervisor, SecureProcessor], order: list[int]
) -> None:
    hv, psp = platform
    freed = hv.allocate_pages(4)
    hv._free.extend(freed[index] for index in reversed(order))  # handed out in ``order``
    launcher = _Launcher(hv, psp, SnpLaunchConfig())
    pages = [(0x10000 + n * PAGE, bytes([n + 1]) * PAGE) for n in range(5)]
    spas = launcher.update_pages(pages, PageType.NORMAL)
    assert spas[:4] == [freed[index] for index in order]
    for (gpa, data), spa in zip(pages, spas, strict=True):
        assert launcher.vm.translate(gpa) == spa
        assert hv.machine.engine.read(launcher.vm.asid, spa, PAGE) == data
    expected = ZERO_DIGEST
    for gpa, data in pages:
        expected = extend(expected, PageType.NORMAL, gpa, data)
    assert psp.guest_measurement(launcher.handle) == expected


def test_a_run_of_imi_pages_measures_each_as_an_imi_page(
    platform: tuple[Hypervisor, SecureProcessor]
) -> None:
    """PAGE_INFO's IMI_PAGE flag reaches every page of a run (a run of IMI pages does not
    measure as ordinary pages)."""
    hv, psp = platform
    handle = _start(hv, psp)
    spas = _pages(hv, 3)
    psp.snp_launch_update_pages(handle, spas, PageType.NORMAL, imi_page=True)
    digest = ZERO_DIGEST
    for index in range(3):
        page = contents_digest(PageType.NORMAL, bytes([index + 1]) * PAGE)
        digest = PageInfo(digest, page, PageType.NORMAL, 0x10000 + index * PAGE,
                          imi_page=True).measure()
    assert psp.guest_measurement(handle) == digest != _expected(PageType.NORMAL, 3)
