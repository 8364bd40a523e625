"""The host's own parts of ``cvm vm run`` (:mod:`cvm.host.vm_run`): the plain launch's memory, what
it keeps at each exit, the vTPM state file it stores and the one it seals itself."""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cvm.amd.pki import default_vendor
from cvm.errors import FormatError, StateError, UsageError
from cvm.formats.svsm.svsm_image import SVSM_SEV_FEATURES
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.vcpu import VmExit
from cvm.hardware.vm import Mode
from cvm.host import vm_run
from cvm.host.launch import DEFAULT_POLICY, FOUR_GIB
from cvm.host.vm_run import (
    DEFAULT_MEMORY,
    DRAM_BYTES,
    HostRun,
    VmRequest,
    _state_counter,
    launch,
    load_host_image,
)
from cvm.host.vmm import Hypervisor
from cvm.vtpm.state_file import HEADER_SIZE, MonotonicCounter, ReleasedKeyProvider, open_state


def _plain(bundle: Path, **request: Any) -> HostRun:
    return launch(load_host_image(bundle), VmRequest(Mode.PLAIN, **request),
                  default_vendor("Milan").manufacture_chip(0))


def test_a_plain_launch_maps_the_firmware_below_4_gib_and_the_ram_from_0(
        uki_bundle: Path) -> None:
    memory = DEFAULT_MEMORY + 3 * PAGE_SIZE
    run = _plain(uki_bundle, vcpus=3, memory_bytes=memory)
    firmware = run.image.firmware
    vm, machine = run.guest.vm, run.host.machine
    assert len(firmware) % PAGE_SIZE == 0 and len(firmware) > PAGE_SIZE
    base = FOUR_GIB - len(firmware)
    for offset in range(0, len(firmware), PAGE_SIZE):
        spa = vm.translate(base + offset)
        assert spa is not None
        assert machine.host_read(spa, PAGE_SIZE) == firmware[offset:offset + PAGE_SIZE]
    assert vm.translate(base - PAGE_SIZE) is None
    ram = [vm.translate(gpa) for gpa in range(0, memory, PAGE_SIZE)]
    assert None not in ram and vm.translate(memory) is None
    pages = len(firmware) // PAGE_SIZE + memory // PAGE_SIZE
    assert len(run.guest.frames) == len(set(run.guest.frames)) == pages
    assert set(run.guest.frames) == {vm.translate(base + o) for o in range(0, len(firmware),
                                                                        PAGE_SIZE)} | set(ram)
    assert [cpu.index for cpu in run.guest.vcpus] == [0, 1, 2]
    assert all(cpu.vm is vm for cpu in run.guest.vcpus)
    assert vm.asid == 0 and vm.mode is Mode.PLAIN  # no key: the host's own ASID
    assert run.measurement is None and run.relay is None and run.vtpm is not None
    # The exit is kept before any device answers over the guest's GHCB.
    assert run.host.exit_hooks == [run.record_exit, run.vtpm]


def test_each_exit_keeps_the_ghcb_msr_and_the_page_it_points_at(uki_bundle: Path) -> None:
    run = _plain(uki_bundle)
    gpa = 5 * PAGE_SIZE
    spa = run.guest.vm.translate(gpa)
    assert spa is not None
    page = bytes(range(256)) * (PAGE_SIZE // 256)
    run.host.machine.host_write(spa, page)
    exits, views = len(run.exits), len(run.exit_views)
    info = VmExit(0, 0x403)
    for msr, view in ((gpa, gpa.to_bytes(8, "little") + page),
                      (gpa + 1, (gpa + 1).to_bytes(8, "little")),  # an MSR protocol value
                      (0, bytes(8)),
                      (1 << 31, (1 << 31).to_bytes(8, "little"))):  # a page not mapped
        run.record_exit(run.guest, SimpleNamespace(ghcb_msr=msr), info)  # type: ignore[arg-type]
        assert run.exit_views[-1] == view
        assert run.exits[-1] is info
    assert len(run.exits) == exits + 4 and len(run.exit_views) == views + 4
    other = dataclasses.replace(run.guest)
    run.record_exit(other, SimpleNamespace(ghcb_msr=gpa), info)  # type: ignore[arg-type]
    assert len(run.exits) == exits + 4 and len(run.exit_views) == views + 4


def test_the_host_stores_the_state_file_where_the_image_names_it(tmp_path: Path,
                                                                  uki_bundle: Path) -> None:
    run = _plain(uki_bundle)
    run.image = dataclasses.replace(run.image, state_path=tmp_path / "state.bin")
    run.store_state(b"sealed state")
    assert (tmp_path / "state.bin").read_bytes() == b"sealed state"
    assert run.log[-1] == b"stored the vTPM state file (12 bytes)"
    run.image = dataclasses.replace(run.image, state_path=None)
    with pytest.raises(UsageError, match=r"^this image names no file for the vTPM state$"):
        run.store_state(b"x")


def test_a_disk_that_fills_while_storing_keeps_the_previous_state_file(
        tmp_path: Path, uki_bundle: Path,
        full_disk: Callable[[int], AbstractContextManager[None]]) -> None:
    """The state file holds the VM's TPM (and the disk key sealed to it): half a file would
    lose both, so the previous file stays until the new one is whole."""
    run = _plain(uki_bundle)
    state = tmp_path / "state.bin"
    state.write_bytes(b"previous sealed state")
    run.image = dataclasses.replace(run.image, state_path=state)
    logged = len(run.log)
    with full_disk(4096), pytest.raises(OSError) as caught:
        run.store_state(bytes(3 * 4096))
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(state)
    assert state.read_bytes() == b"previous sealed state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]  # no temporary left
    assert len(run.log) == logged  # nothing stored, nothing said to be
    run.store_state(b"new sealed state")
    assert state.read_bytes() == b"new sealed state" and state.stat().st_mode & 0o777 == 0o600


def test_the_host_seals_its_vtpm_one_past_the_file_it_opened(uki_bundle: Path) -> None:
    run = _plain(uki_bundle)
    key = run.image.state_key
    assert key is not None and run.vtpm is not None
    opened = _state_counter(run.image.state)
    sealed = run.seal_host_vtpm()
    assert _state_counter(sealed) == opened + 1
    state = open_state(sealed, ReleasedKeyProvider(key), MonotonicCounter(opened))
    assert state == run.vtpm.tpm.state.to_bytes()
    vtpm = run.vtpm
    run.vtpm = None
    with pytest.raises(StateError, match=r"^this VM's vTPM is not the host's$"):
        run.seal_host_vtpm()
    run.vtpm = vtpm
    run.image = dataclasses.replace(run.image, state_key=None)
    with pytest.raises(StateError, match=r"^this VM's vTPM is not the host's$"):
        run.seal_host_vtpm()


def test_a_state_file_shorter_than_its_header_is_refused(uki_bundle: Path) -> None:
    state = load_host_image(uki_bundle).state
    assert _state_counter(state[:HEADER_SIZE]) == _state_counter(state)
    with pytest.raises(FormatError,
                       match=f"^vTPM state file is truncated: {HEADER_SIZE - 1} bytes$"):
        _state_counter(state[:HEADER_SIZE - 1])


@pytest.mark.parametrize(("request_", "message"), [
    ({"vcpus": 0}, "--vcpus: 0 is not between 1 and 64"),
    ({"vcpus": 65}, "--vcpus: 65 is not between 1 and 64"),
    ({"memory_bytes": DEFAULT_MEMORY - PAGE_SIZE}, "--memory: at least 2 MiB, in whole pages"),
    ({"memory_bytes": DEFAULT_MEMORY + 1}, "--memory: at least 2 MiB, in whole pages"),
])
def test_a_request_out_of_bounds_is_refused_by_name(uki_bundle: Path, request_: dict[str, int],
                                                     message: str) -> None:
    with pytest.raises(UsageError) as refused:
        _plain(uki_bundle, **request_)
    assert str(refused.value) == message


def test_the_bounds_themselves_are_launched(uki_bundle: Path) -> None:
    assert len(_plain(uki_bundle, vcpus=64).guest.vcpus) == 64
    assert len(_plain(uki_bundle, vcpus=1).guest.vcpus) == 1


class _StopError(Exception):
    """Ends a launch once the test has what the host asked the PSP for."""


@pytest.mark.parametrize("policy", [None, 0xB_0000])  # QEMU's (0x3_0000), another
def test_the_launch_asks_for_what_the_request_and_the_image_say(
        uki_bundle: Path, monkeypatch: pytest.MonkeyPatch, policy: int | None) -> None:
    asked: dict[str, Any] = {}

    def snp(*args: Any) -> Any:
        asked["snp"] = args[5]
        raise _StopError

    def sev(*args: Any, **kwargs: Any) -> Any:
        asked["sev"] = kwargs
        raise _StopError

    monkeypatch.setattr(vm_run, "launch_snp_svsm", snp)
    monkeypatch.setattr(vm_run, "launch_sev", sev)
    image = dataclasses.replace(load_host_image(uki_bundle), vcpu_signature=0x00B10F10)
    chip = default_vendor("Milan").manufacture_chip(0)
    memory = DEFAULT_MEMORY + 5 * PAGE_SIZE
    for mode in (Mode.SEV_SNP, Mode.SEV_ES):
        with pytest.raises(_StopError):
            launch(image, VmRequest(mode, vcpus=3, memory_bytes=memory, policy=policy), chip)
    config = asked["snp"]
    assert (config.vcpus, config.vcpu_signature, config.guest_features, config.ram_bytes,
            config.policy) == (3, 0x00B10F10, SVSM_SEV_FEATURES, memory,
                               DEFAULT_POLICY if policy is None else policy)
    assert {key: asked["sev"][key] for key in ("es", "vcpus", "vcpu_signature", "ram_bytes",
                                               "policy")} == {
        "es": True, "vcpus": 3, "vcpu_signature": 0x00B10F10, "ram_bytes": memory,
        "policy": policy}


def test_a_host_without_a_psp_or_without_its_legacy_commands_is_refused(
        uki_bundle: Path) -> None:
    image = load_host_image(uki_bundle)
    chip = default_vendor("Milan").manufacture_chip(0)
    machine = Machine(DRAM_BYTES)
    hosts = [Hypervisor(machine), Hypervisor(machine, SecureProcessor(machine, chip))]
    hosts[1].legacy = None
    for host in hosts:
        with pytest.raises(StateError) as refused:
            launch(image, VmRequest(Mode.PLAIN), chip, host)
        assert str(refused.value) == "the host needs a PSP to launch an encrypted VM"


def test_a_mode_the_image_was_not_built_for_is_refused_before_the_launch(uki_bundle: Path
                                                                         ) -> None:
    image = load_host_image(uki_bundle)
    chip = default_vendor("Milan").manufacture_chip(0)
    machine = Machine(FOUR_GIB)
    host = Hypervisor(machine, SecureProcessor(machine, chip))
    for built, mode in ((("sev-snp",), Mode.PLAIN), (("plain", "sev", "sev-es"), Mode.SEV_SNP),
                        ((), Mode.SEV)):
        with pytest.raises(UsageError) as refused:
            launch(dataclasses.replace(image, modes=built), VmRequest(mode), chip, host)
        assert str(refused.value) == (
            f"the image was built for {', '.join(built) or 'no mode'}, not {mode.value}: "
            f"build it with --mode {mode.value} (or all)")
    assert host.guests == {} and machine.dram.chunks() == []
    run = launch(dataclasses.replace(image, modes=("sev",)), VmRequest(Mode.SEV), chip, host)
    assert run.guest is not None


def test_an_image_without_the_file_a_mode_needs_is_refused_by_name(uki_bundle: Path) -> None:
    image = load_host_image(uki_bundle)
    chip = default_vendor("Milan").manufacture_chip(0)
    with pytest.raises(UsageError) as refused:
        launch(dataclasses.replace(image, svsm=None), VmRequest(Mode.SEV_SNP), chip)
    assert str(refused.value) == "an sev-snp launch needs firmware/SVSM.bin in the image"
    with pytest.raises(UsageError) as refused:
        launch(dataclasses.replace(image, state_key=None), VmRequest(Mode.SEV), chip)
    assert str(refused.value) == ("a sev VM has no SVSM: the host's vTPM needs "
                                  "host-vtpm-state.key in the image (build it for that mode)")
