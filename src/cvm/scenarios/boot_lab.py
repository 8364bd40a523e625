"""A VM booted from its image bundle, for the boot-file and state attacks.

:class:`BootLab` implements :class:`~cvm.host.adversary.lab.Lab` over
:func:`cvm.guest.run.boot_bundle`: the host gets its own copy of the owner's bundle (never the
``owner/`` folder), which the attack may change; each :meth:`BootLab.boot` launches the VM from
that copy on the lab's host, the SVSM (SEV-SNP) or the host's vTPM starts, the boot chain runs,
the initramfs unseals and opens the root and the workload runs — or a stage refuses. The
owner's relying party and its rollback counter persist across the boots of one lab, as they
would across reboots of one VM.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from cvm.amd.pki import default_vendor
from cvm.errors import CvmError, StateError
from cvm.guest.run import PRODUCT, boot_bundle, relying_party
from cvm.guest.trace import VmTrace
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.vm import Mode
from cvm.host.adversary.host_view import HostView
from cvm.host.adversary.lab import BootReport, Evidence, Release
from cvm.host.vmm import Guest, Hypervisor
from cvm.image.reference_values import loads
from cvm.scenarios.attack_bundles import LabBundles
from cvm.vtpm.state_file import MonotonicCounter

RandomBytes = Callable[[int], bytes]
DRAM_BYTES = 4 << 30
HOST_FILES = ("disk.img", "image.json", "reference-values.json", "vtpm-state.bin",
              "host-vtpm-state.key", "firmware")
STATE_BOOTED = ("initramfs", "workload")
COPY_BLOCK_BYTES = 1 << 16


def host_copy(bundle: Path, into: Path) -> Path:
    """What the host is handed of ``bundle``: everything but ``owner/``."""
    into.mkdir(parents=True)
    for name in HOST_FILES:
        source = bundle / name
        if source.is_dir():
            shutil.copytree(source, into / name, copy_function=sparse_copy)
        elif source.exists():
            sparse_copy(source, into / name)
    return into


def sparse_copy(source: Path | str, target: Path | str) -> None:
    """Copy a file, leaving holes where the source has whole blocks of zeros (a disk image's
    empty file system costs nothing)."""
    zero = bytes(COPY_BLOCK_BYTES)
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while block := reader.read(COPY_BLOCK_BYTES):
            if block == zero:
                writer.seek(len(block), os.SEEK_CUR)
            else:
                writer.write(block)
        writer.truncate()


class BootLab:
    """One mode's VM booted from a host-side copy of the owner's bundle."""

    def __init__(self, mode: Mode, bundles: LabBundles, random_bytes: RandomBytes = os.urandom,
                 workdir: Path | None = None) -> None:
        self._mode = mode
        self.bundles = bundles
        self.random_bytes = random_bytes
        self._scratch = tempfile.TemporaryDirectory(prefix="cvm-lab-", dir=workdir)
        scratch = Path(self._scratch.name)
        self.owner_folder = bundles.own_for(mode)
        self._bundle = host_copy(self.owner_folder, scratch / "host")
        self._foreign: Path | None = None
        self._scratch_path = scratch
        vendor = default_vendor(PRODUCT)
        machine = Machine(DRAM_BYTES, random_bytes=random_bytes)
        self._host = Hypervisor(machine, SecureProcessor(machine, vendor.manufacture_chip(0)))
        self.view = HostView(self._host)
        reference = loads((self.owner_folder / "reference-values.json").read_bytes())
        self.party = relying_party(self.owner_folder, reference, vendor, random_bytes)
        self.counter = MonotonicCounter()
        self.traces: list[VmTrace] = []

    def close(self) -> None:
        self._scratch.cleanup()

    # -- the Lab protocol ---------------------------------------------------------------------
    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def host(self) -> Hypervisor:
        return self._host

    @property
    def guest(self) -> Guest:
        for trace in reversed(self.traces):
            if trace.guest is not None:
                guest: Guest = trace.guest
                return guest
        raise StateError("the VM has not been launched yet")

    @property
    def psp(self) -> SecureProcessor | None:
        return self._host.psp

    @property
    def secret(self) -> bytes:
        return self.secrets().get("workload data", b"")

    @property
    def secret_gpa(self) -> int:
        raise StateError("the boot lab has no fixed secret page")

    @property
    def spare_gpa(self) -> int:
        raise StateError("the boot lab has no spare page")

    def bundle(self) -> Path:
        return self._bundle

    def foreign_bundle(self) -> Path:
        if self._foreign is None:
            self._foreign = host_copy(self.bundles.foreign_for(self._mode),
                                      self._scratch_path / "foreign")
        return self._foreign

    def old_release(self) -> Path:
        return self.bundles.old_release

    def boot(self) -> BootReport:
        hooks = list(self._host.exit_hooks)
        try:
            trace = boot_bundle(self._bundle, self._mode, host=self._host,
                                random=self.random_bytes, counter=self.counter,
                                party=self.party, store_state=True)
        finally:
            self._host.exit_hooks[:] = hooks  # the run's devices go with its VM
        self.traces.append(trace)
        if trace.refused is None:
            return BootReport(True, trace.unsealed, trace.workload_ok)
        stage, error = trace.refused
        return BootReport(stage in STATE_BOOTED, trace.unsealed, trace.workload_ok, stage,
                          str(error), type(error).__name__)

    def secrets(self) -> dict[str, bytes]:
        """Every secret any boot of this lab held, read back through its guest."""
        found: dict[str, bytes] = {}
        for trace in self.traces:
            try:
                secrets = trace.secrets()
            except CvmError:
                continue
            found.update({k: v for k, v in secrets.items() if len(v) >= 8})
        return found

    def host_files(self) -> dict[str, bytes]:
        """The files the host holds, and the logs of every run."""
        files = {}
        for path in sorted(self._bundle.rglob("*")):
            if path.is_file():
                files[str(path.relative_to(self._bundle))] = path.read_bytes()
        for number, trace in enumerate(self.traces):
            if trace.run is not None:
                files[f"host log of boot {number}"] = b"\n".join(trace.run.log)
        return files

    # -- what this lab does not do ------------------------------------------------------------
    def guest_write(self, gpa: int, data: bytes) -> None:
        raise StateError("the boot lab drives no guest memory directly")

    def guest_read(self, gpa: int, size: int) -> bytes:
        raise StateError("the boot lab drives no guest memory directly")

    def guest_set_register(self, name: str, value: int) -> None:
        raise StateError("the boot lab drives no registers directly")

    def guest_register(self, name: str) -> int:
        raise StateError("the boot lab drives no registers directly")

    def guest_exit(self) -> None:
        raise StateError("the boot lab drives no exits directly")

    def guest_cpuid(self, leaf: int) -> tuple[int, int, int, int]:
        raise StateError("the boot lab drives no CPUID directly")

    def guest_interrupt_masked(self) -> None:
        raise StateError("the boot lab drives no interrupts directly")

    def guest_events(self) -> list[int]:
        return []

    def launch(self, *, flip_firmware_bit: int | None = None, debug: bool = False,
               rollback: bool = False) -> Release:
        raise StateError("the boot lab launches only through boot()")

    def attest(self) -> tuple[bytes, Evidence]:
        raise StateError("the boot lab attests only through boot()")

    def appraise(self, evidence: Evidence, nonce: bytes) -> Release:
        raise StateError("the boot lab attests only through boot()")

    def guest_request_report(self) -> str:
        raise StateError("the boot lab attests only through boot()")
