"""One host, a VM per mode, one secret page: the guest reads back what it wrote in every mode, the
host reads it as written only in plain mode, and each view is of the page the guest wrote."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from cvm.errors import UsageError
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vm import Mode
from cvm.host.vmm import Guest, Hypervisor
from cvm.scenarios import memory_views
from cvm.scenarios.memory_views import (
    SECRET_GPA,
    PageViews,
    launch_all,
    platform,
    reads_alike,
    secret_page,
)

SECRET = b"owner's secret: 0123456789abcdef"


def _pixel(page: bytes, x: int, y: int) -> int:
    return page[y * 64 + x]


def test_the_secret_page_is_a_ramp_with_a_ring_then_the_secret() -> None:
    page = secret_page(b"tail")
    assert len(page) == PAGE_SIZE and page.endswith(b"tail")
    assert _pixel(page, 0, 0) == 0 and _pixel(page, 10, 3) == 26  # the ramp: (x + y) * 2
    assert _pixel(page, 32, 32) == 128  # the centre, inside the ring
    for x in (51, 54, 57):  # the ring: 22 from the centre, 3 either side
        assert _pixel(page, x, 32) == 255, x
        assert _pixel(page, 32, x) == 255, x
    assert _pixel(page, 50, 32) == 164 and _pixel(page, 58, 32) == 180  # 4 off: the ramp
    assert _pixel(page, 32 + 15, 32 + 15) == 255  # 21.2 from the centre, on the diagonal
    assert page.count(255) > 300  # a ring, not a few points
    assert _pixel(page, 63, 62) == 250


def test_an_empty_secret_leaves_the_picture_whole() -> None:
    page = secret_page(b"")
    assert len(page) == PAGE_SIZE and page[-1] == 252  # (63 + 63) * 2
    assert page[:-1] == secret_page(b"x")[:-1]


def test_a_secret_longer_than_the_page_is_refused() -> None:
    with pytest.raises(UsageError, match=r"^the secret is 4097 bytes; a page holds 4096$"):
        secret_page(bytes(PAGE_SIZE + 1))
    assert secret_page(bytes(PAGE_SIZE)) == bytes(PAGE_SIZE)


def _launch(monkeypatch: pytest.MonkeyPatch) -> tuple[list[PageViews], list[Hypervisor],
                                                      list[Guest]]:
    hosts: list[Hypervisor] = []
    guests: list[Guest] = []

    def recording(dram_bytes: int, random_bytes: Callable[[int], bytes]) -> Hypervisor:
        host = platform(dram_bytes, random_bytes)
        create = host.create_vm

        def create_vm(mode: Mode | str, memory_bytes: int, **kwargs: object) -> Guest:
            guests.append(create(mode, memory_bytes, **kwargs))  # type: ignore[arg-type]
            return guests[-1]

        host.create_vm = create_vm  # type: ignore[method-assign]
        hosts.append(host)
        return host

    monkeypatch.setattr(memory_views, "platform", recording)
    views = launch_all(SECRET, random.Random(5).randbytes)
    return views, hosts, guests


def test_one_host_runs_a_vm_of_each_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    views, hosts, guests = _launch(monkeypatch)
    assert [view.mode for view in views] == [Mode.PLAIN, Mode.SEV, Mode.SEV_ES, Mode.SEV_SNP]
    assert len(hosts) == 1 and hosts[0].psp is not None
    assert hosts[0].machine.dram.size_bytes == 256 << 20
    assert [guest.vm.mode for guest in guests] == [view.mode for view in views]
    assert [guest.vm.asid for guest in guests] == [view.asid for view in views]
    assert len({view.asid for view in views}) == 4
    for view, guest in zip(views, guests, strict=True):
        assert view.system_address == hosts[0].spa_of(guest, SECRET_GPA)
        assert guest.vm.memory_bytes == 16 * PAGE_SIZE


def test_the_guest_reads_its_page_in_every_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    views, _, _ = _launch(monkeypatch)
    for view in views:
        assert view.guest_view == secret_page(SECRET), view.mode


def test_the_host_reads_the_page_as_dram_holds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    views, hosts, _ = _launch(monkeypatch)
    machine = hosts[0].machine
    for view in views:
        assert view.host_view == machine.dram.read(view.system_address, PAGE_SIZE), view.mode


def test_only_plain_mode_shows_the_host_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    views, _, _ = _launch(monkeypatch)
    plain, *encrypted = views
    assert plain.host_view == secret_page(SECRET) and plain.host_sees_plaintext
    for view in encrypted:
        assert not view.host_sees_plaintext, view.mode
        assert SECRET[:8] not in view.host_view and SECRET[-8:] not in view.host_view
    assert len({view.host_view for view in encrypted}) == 3  # a key of its own per VM


def test_reads_alike_compares_the_two_views() -> None:
    same = PageViews(Mode.SEV, 1, 0x1000, b"a" * 8, b"a" * 8)
    other = PageViews(Mode.SEV, 1, 0x1000, b"a" * 8, b"a" * 7 + b"b")
    assert reads_alike(same) and same.host_sees_plaintext
    assert not reads_alike(other) and not other.host_sees_plaintext


def test_a_seeded_run_shows_the_same_pictures() -> None:
    """The demo's --seed: the same randomness gives the same keys, so the same ciphertext."""
    first = launch_all(SECRET, random.Random(9).randbytes)
    again = launch_all(SECRET, random.Random(9).randbytes)
    assert [v.host_view for v in first] == [v.host_view for v in again]
    other = launch_all(SECRET, random.Random(10).randbytes)
    assert [v.host_view for v in first][1:] != [v.host_view for v in other][1:]
