"""The host's side of ``cvm vm run``: it holds bytes, launches the VM through the PSP, emulates
its devices, keeps its logs — and is untrusted.

What the host is given (docs/image-bundle.md): ``disk.img``, ``firmware/OVMF.fd``,
``firmware/OVMF_VARS.fd``, ``firmware/SVSM.bin`` (sev-snp), ``vtpm-state.bin`` and, for a mode
without an SVSM, ``host-vtpm-state.key``. It never reads ``owner/`` (:func:`load_host_image`
refuses a path inside it). It launches per mode (QEMU's order, :mod:`cvm.host.launch`):

* ``sev-snp``: OVMF under the SVSM through SNP_LAUNCH_START/UPDATE/FINISH (firmware, SVSM,
  secrets and CPUID pages, one VMSA per vCPU), with its guest-request relay;
* ``sev-es`` / ``sev``: LAUNCH_START/UPDATE_DATA(/UPDATE_VMSA)/MEASURE/FINISH;
* ``plain``: it copies the firmware into guest memory itself (nothing is measured).

Its devices: the disk (a block device over the image file, each access logged — a host sees
which sectors a guest touches) and, without an SVSM, the vTPM (:class:`~cvm.host.vtpm_device.
HostVtpm`) with the state it opens itself. :func:`host_view` is everything the host can read
afterwards: all of DRAM (shared, GHCB and private pages as they are), the VMSA pages, every
exit's register view, the disk image, the state file and its logs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvm.amd.kds import ChipFuses
from cvm.disk.storage import FileStorage
from cvm.errors import FormatError, StateError, UsageError
from cvm.files import write_atomically
from cvm.formats.image_manifest import check_schema
from cvm.formats.svsm.svsm_image import SVSM_SEV_FEATURES
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.vcpu import Vcpu, VmExit
from cvm.hardware.vm import Mode, VirtualMachine
from cvm.host.launch import (
    DEFAULT_POLICY,
    FOUR_GIB,
    GuestRequestRelay,
    SnpLaunchConfig,
    launch_sev,
    launch_snp_svsm,
)
from cvm.host.vmm import Guest, Hypervisor
from cvm.host.vtpm_device import HostVtpm
from cvm.vtpm.engine import Tpm
from cvm.vtpm.state import PersistentState
from cvm.vtpm.state_file import (
    HEADER_LAYOUT,
    HEADER_SIZE,
    MonotonicCounter,
    ReleasedKeyProvider,
    open_state,
    seal_state,
)

DEFAULT_MEMORY = 2 << 20
DRAM_BYTES = 4 << 30
OWNER_FOLDER = "owner"


@dataclass(frozen=True)
class HostImage:
    """The bytes a host holds for one VM."""

    firmware: bytes
    varstore: bytes
    svsm: bytes | None
    disk: Path
    state: bytes
    state_key: bytes | None
    vcpu_signature: int = 0x00A00F11
    state_path: Path | None = None  # where the host stores the vTPM state file
    modes: tuple[str, ...] | None = None  # the modes the image was built for, when it says


def _inside(root: str, name: str) -> str:
    """The path of the image's file ``name``, the folder resolving to ``root``
    (``os.path.realpath``: symbolic links and ``..`` resolved); refused when the file resolves
    outside the folder or into the owner's folder."""
    if not isinstance(name, str) or not name:
        raise FormatError(f"image.json: a file name is not a string: {name!r}")
    path = os.path.realpath(os.path.join(root, name))
    inside = os.path.join(root, "")  # the folder with one trailing separator
    if path != root and not path.startswith(inside):
        raise UsageError(f"{name}: the image names a file outside its folder")
    if path[len(inside):].split(os.sep, 1)[0] == OWNER_FOLDER:
        raise UsageError(f"{name}: the host never reads the owner's folder")
    return path


def _read(folder: Path, root: str, name: str) -> bytes:
    """The file ``name`` of the image in ``folder`` (:func:`_inside`)."""
    path = _inside(root, name)
    try:
        with open(path, "rb", buffering=0) as file:
            return file.read()
    except FileNotFoundError:
        raise UsageError(f"{folder}: the image has no {name}") from None


def _optional(folder: Path, root: str, name: str | None) -> bytes | None:
    """A file only some modes need: None when the manifest names none or it is missing (the
    launch that needs it says so)."""
    if name is None or name == "":
        return None
    if not os.path.isfile(_inside(root, name)):
        return None
    return _read(folder, root, name)


def load_host_image(folder: Path) -> HostImage:
    """What the host takes from an image bundle (never ``owner/``)."""
    root = os.path.realpath(folder)
    manifest: Any = _read(folder, root, "image.json")
    try:
        manifest = json.loads(manifest)
    except ValueError:
        raise FormatError(f"{folder}/image.json: not an image manifest") from None
    if isinstance(manifest, dict):  # a schema the host does not know is not guessed at
        check_schema(manifest, f"{folder}/image.json")
    try:
        firmware, vtpm = manifest["firmware"], manifest["vtpm"]
        svsm_name, key_name = firmware.get("svsm"), vtpm.get("host_state_key")
        disk_name, ovmf, varstore, state = (manifest["disk"]["file"], firmware["ovmf"],
                                            firmware["vars"], vtpm["state"])
        signature = int(manifest.get("vcpu_signature", "0xa00f11"), 16)
        modes = manifest.get("modes")
        if modes is not None and not (isinstance(modes, list)
                                      and all(isinstance(mode, str) for mode in modes)):
            raise TypeError("modes")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise FormatError(f"{folder}/image.json: not an image manifest") from None
    disk = Path(_inside(root, disk_name))
    if not disk.is_file():
        raise UsageError(f"{folder}: the image has no disk {disk_name}")
    return HostImage(
        _read(folder, root, ovmf), _read(folder, root, varstore),
        _optional(folder, root, svsm_name), disk, _read(folder, root, state),
        _optional(folder, root, key_name), signature, folder / state,
        None if modes is None else tuple(modes),
    )


@dataclass(frozen=True)
class VmRequest:
    """What ``cvm vm run`` asks for."""

    mode: Mode = Mode.SEV_SNP
    vcpus: int = 1
    memory_bytes: int = DEFAULT_MEMORY
    tik: bytes | None = None  # sev/sev-es: the owner's transport integrity key (its session)
    policy: int | None = None  # the guest policy the host asks the PSP for (None: QEMU's)


class HostDisk:
    """The guest's disk: the image file as a block device; the host logs each access.

    It is the only writer of its file, so a flush that follows no write has nothing to make
    durable and does not reach ``fsync``."""

    def __init__(self, path: Path, log: list[bytes]) -> None:
        self.path = path
        self._file = FileStorage(path)
        self._log = log
        self._unflushed = False  # a write since the last flush

    def size(self) -> int:
        return self._file.size()

    def read(self, offset: int, size: int) -> bytes:
        self._log.append(f"disk read {offset:#x}+{size:#x}".encode())
        return self._file.read(offset, size)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._log.append(f"disk write {offset:#x}+{len(memoryview(data).cast('B')):#x}".encode())
        self._unflushed = True  # before the write: a write that fails part-way still counts
        self._file.write(offset, data)

    def flush(self) -> None:
        if self._unflushed:
            self._file.flush()
            self._unflushed = False

    def close(self) -> None:
        self._file.close()


@dataclass
class HostRun:
    """One VM as the host runs it."""

    request: VmRequest
    host: Hypervisor
    psp: SecureProcessor
    guest: Guest
    image: HostImage
    disk: HostDisk
    measurement: bytes | None = None
    secrets_gpa: int | None = None
    relay: GuestRequestRelay | None = None
    vtpm: HostVtpm | None = None
    log: list[bytes] = field(default_factory=list)
    exits: list[VmExit] = field(default_factory=list)
    exit_views: list[bytes] = field(default_factory=list)  # the GHCB MSR and page at each exit

    def record_exit(self, guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        """Exit hook: keep what the host saw at this exit (the VMCB is in ``info``)."""
        if guest is not self.guest:
            return
        self.exits.append(info)
        msr = vcpu.ghcb_msr  # the running level's MSR, read once
        view = msr.to_bytes(8, "little")
        if msr and msr % PAGE_SIZE == 0:  # it holds the GHCB's address: the page too
            spa = guest.vm.translate(msr)
            if spa is not None:
                view += self.host.machine.host_read(spa, PAGE_SIZE)
        self.exit_views.append(view)

    @property
    def bsp(self) -> Vcpu:
        return self.guest.vcpus[0]

    def store_state(self, sealed: bytes) -> None:
        """Keep the vTPM state file the VM handed out at shutdown (what a host stores)."""
        if self.image.state_path is None:
            raise UsageError("this image names no file for the vTPM state")
        write_atomically(self.image.state_path, sealed)  # never half a state: the TPM is in it
        self.log.append(f"stored the vTPM state file ({len(sealed)} bytes)".encode())

    def seal_host_vtpm(self) -> bytes:
        """The host's vTPM state, sealed under the key it holds; the counter is the host's
        own (one past the file it opened) — nothing outside the host can stop a rollback."""
        if self.vtpm is None or self.image.state_key is None:
            raise StateError("this VM's vTPM is not the host's")
        self.vtpm.tpm.save_clock()
        opened = _state_counter(self.image.state)
        return seal_state(self.vtpm.tpm.state.to_bytes(), ReleasedKeyProvider(
            self.image.state_key), MonotonicCounter(opened), os.urandom)


def _state_counter(sealed: bytes) -> int:
    """The counter in a state file's header. The host's vTPM has no counter of its own: it
    believes whatever file it holds — so nothing stops it from rolling its own state back."""
    if len(sealed) < HEADER_SIZE:
        raise FormatError(f"vTPM state file is truncated: {len(sealed)} bytes")
    return int(HEADER_LAYOUT.unpack(sealed[:HEADER_SIZE])["counter"])


def _launch_plain(hv: Hypervisor, firmware: bytes, request: VmRequest) -> Guest:
    """No launch commands: the host copies the firmware below 4 GiB and maps RAM."""
    machine = hv.machine
    vm = VirtualMachine(machine, 0, Mode.PLAIN, FOUR_GIB)
    frames: list[int] = []
    base = FOUR_GIB - len(firmware)
    for offset in range(0, len(firmware), PAGE_SIZE):
        spa = hv.allocate_page()
        machine.host_write(spa, firmware[offset:offset + PAGE_SIZE])
        vm.map(base + offset, spa)
        frames.append(spa)
    for gpa in range(0, request.memory_bytes, PAGE_SIZE):
        spa = hv.allocate_page()
        vm.map(gpa, spa)
        frames.append(spa)
    return hv.adopt(vm, [Vcpu(vm, i) for i in range(request.vcpus)], frames)


def launch(image: HostImage, request: VmRequest, fuses: ChipFuses,
           host: Hypervisor | None = None) -> HostRun:
    """Launch the VM of ``image`` on ``host`` (a new machine with a PSP of ``fuses`` when
    None) and start its boot vCPU."""
    if not 1 <= request.vcpus <= 64:
        raise UsageError(f"--vcpus: {request.vcpus} is not between 1 and 64")
    if request.memory_bytes < DEFAULT_MEMORY or request.memory_bytes % PAGE_SIZE:
        raise UsageError(f"--memory: at least {DEFAULT_MEMORY >> 20} MiB, in whole pages")
    if host is None:
        machine = Machine(DRAM_BYTES)
        host = Hypervisor(machine, SecureProcessor(machine, fuses))
    psp = host.psp
    if psp is None or host.legacy is None:
        raise StateError("the host needs a PSP to launch an encrypted VM")
    log: list[bytes] = []
    disk = HostDisk(image.disk, log)
    mode = request.mode
    if image.modes is not None and mode.value not in image.modes:
        raise UsageError(f"the image was built for {', '.join(image.modes) or 'no mode'}, not "
                         f"{mode.value}: build it with --mode {mode.value} (or all)")
    measurement = secrets = relay = vtpm = None
    if mode is Mode.SEV_SNP:
        if image.svsm is None:
            raise UsageError("an sev-snp launch needs firmware/SVSM.bin in the image")
        relay = GuestRequestRelay(psp)
        config = SnpLaunchConfig(vcpus=request.vcpus, vcpu_signature=image.vcpu_signature,
                                 guest_features=SVSM_SEV_FEATURES,
                                 ram_bytes=request.memory_bytes,
                                 policy=DEFAULT_POLICY if request.policy is None
                                 else request.policy)
        launched = launch_snp_svsm(host, psp, image.firmware, image.svsm, len(image.varstore),
                                   config, relay)
        guest, measurement, secrets = launched.guest, launched.measurement, launched.secrets_gpa
        log.append(f"SNP launch: measurement {measurement.hex()}".encode())
    else:
        if image.state_key is None:
            raise UsageError(f"a {mode.value} VM has no SVSM: the host's vTPM needs "
                             "host-vtpm-state.key in the image (build it for that mode)")
        state = open_state(image.state, ReleasedKeyProvider(image.state_key),
                           MonotonicCounter(max(_state_counter(image.state) - 1, 0)))
        vtpm = HostVtpm(Tpm(PersistentState.from_bytes(state)), log)
        host.exit_hooks.append(vtpm)
        if mode is Mode.PLAIN:
            guest = _launch_plain(host, image.firmware, request)
        else:
            sev = launch_sev(host, host.legacy, image.firmware, es=mode is Mode.SEV_ES,
                             vcpus=request.vcpus, vcpu_signature=image.vcpu_signature,
                             ram_bytes=request.memory_bytes, tik=request.tik,
                             policy=request.policy)
            guest, measurement = sev.guest, sev.measure  # MEASURE (HMAC) ‖ MNONCE
            log.append(f"SEV launch: LAUNCH_MEASURE {measurement.hex()}".encode())
    run = HostRun(request, host, psp, guest, image, disk, measurement, secrets, relay, vtpm, log)
    host.exit_hooks.insert(0, run.record_exit)  # before any device answers in the GHCB
    if run.bsp.registers is None:
        run.bsp.vmrun()
    return run


def host_view(run: HostRun) -> dict[str, bytes]:
    """Everything the host can read of this VM, by name: DRAM (every populated chunk, as the
    host reads it), each exit's register view (the VMCB, or the GHCB MSR and page the guest
    filled), the VMSA pages, the disk image, the state file, the relay's and the devices'
    logs."""
    machine = run.host.machine
    view: dict[str, bytes] = {
        f"DRAM {base:#x}": bytes(chunk) for base, chunk in machine.dram.chunks()}
    for number, info in enumerate(run.exits):
        if info.vmcb is not None:
            view[f"exit {number} VMCB"] = b"".join(
                value.to_bytes(8, "little") for value in info.vmcb.save.values())
        view[f"exit {number} info"] = b"".join(
            v.to_bytes(8, "little") for v in (info.exit_code, info.exit_info1, info.exit_info2))
        view[f"exit {number} GHCB"] = run.exit_views[number]
    for vcpu in run.guest.vcpus:
        for vmpl, spa in vcpu.vmsa_pages().items():
            view[f"vCPU {vcpu.index} VMPL{vmpl} VMSA"] = machine.host_read(spa, PAGE_SIZE)
    view["disk image"] = run.disk.path.read_bytes()
    view["vTPM state file"] = run.image.state
    view["host log"] = b"\n".join(run.log)
    if run.relay is not None:
        view["guest-request relay"] = b"".join(
            request + (response or b"") for request, response in run.relay.log)
    return view
