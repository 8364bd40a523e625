"""The launch's private RAM: mapped and RMP-updated as one run, with every page checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cvm.errors import StatusError
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.memory.rmp import RmpStatus
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.launch import SnpLaunchConfig, launch_snp
from cvm.host.vmm import Hypervisor


def test_a_refused_rmpupdate_of_the_launch_ram_stops_the_launch(
    platform: tuple[Hypervisor, SecureProcessor], firmware: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hv, psp = platform
    allocate: Callable[[int], list[int]] = hv.allocate_pages
    poisoned: list[int] = []

    def allocate_poisoned(count: int) -> list[int]:
        pages = allocate(count)
        if count > 1:  # the RAM run: one page the RMP will not reassign
            hv.machine.rmp.firmware_own(pages[3])
            hv.machine.rmp.entry(pages[3]).assigned = False
            poisoned.append(pages[3])
        return pages

    monkeypatch.setattr(hv, "allocate_pages", allocate_poisoned)
    with pytest.raises(StatusError) as raised:
        launch_snp(hv, psp, firmware, SnpLaunchConfig())
    assert raised.value.code == RmpStatus.FAIL_PERMISSION
    assert f"{poisoned[0]:#x}" in str(raised.value)


def test_the_launch_ram_is_mapped_and_assigned(launch: Callable[..., Any]) -> None:
    launched, _ = launch(ram_bytes=0x20_0000)
    vm = launched.guest.vm
    rmp = vm.machine.rmp
    ram = [
        gpa for gpa in range(0, 0x20_0000, PAGE_SIZE)
        if not rmp.entry(vm.translate(gpa) or 0).validated
    ]
    assert len(ram) > 256
    for gpa in ram:
        spa = vm.translate(gpa)
        assert spa is not None and spa in launched.guest.frames
        entry = rmp.entry(spa)
        assert (entry.assigned, entry.asid, entry.gpa) == (True, vm.asid, gpa)
        assert not entry.immutable
