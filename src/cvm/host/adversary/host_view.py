"""Everything the host can read of a VM, gathered for the canary scan.

- all of DRAM, as the chips hold it (private pages as ciphertext, shared and GHCB pages, VMCB
  and VMSA pages, the host's own pages);
- every exit's register view, recorded as the exit happens: the VMCB save area of a ``plain`` /
  ``sev`` vCPU, and the GHCB page of an ``sev-es`` / ``sev-snp`` vCPU (the guest may overwrite
  the GHCB after the exit, so the view at that moment is kept, as a host that logs exits would);
- the files the host stores (disk image, varstore, vTPM state) and every log it keeps (the
  guest-request relay's request/response pages, the fault log).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from cvm.formats.snp.vmsa import REGISTER_NAMES
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import EXIT_VMGEXIT, Vcpu, VmExit
from cvm.host.adversary.canary import CanaryScan, Leak
from cvm.host.vmm import Guest, Hypervisor

REGISTER_BYTES = 8


class HostView:
    """Records what the host sees at every exit of every guest on ``host`` from now on."""

    def __init__(self, host: Hypervisor) -> None:
        self.host = host
        self.exit_views: list[tuple[str, bytes]] = []
        host.exit_hooks.insert(0, self._record)

    def _record(self, guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        number = len(self.exit_views)
        where = f"exit {number} (ASID {guest.vm.asid}, code {info.exit_code:#x})"
        if info.vmcb is not None:
            save = info.vmcb.save
            data = b"".join(
                (save.get(name, 0) & (1 << 64) - 1).to_bytes(REGISTER_BYTES, "little")
                for name in REGISTER_NAMES
            )
            self.exit_views.append((f"{where}: VMCB registers", data))
        elif info.exit_code == EXIT_VMGEXIT and vcpu.ghcb_msr:
            if vcpu.ghcb_msr % PAGE_SIZE:
                msr = vcpu.ghcb_msr.to_bytes(REGISTER_BYTES, "little")
                self.exit_views.append((f"{where}: GHCB MSR", msr))
                return
            spa = guest.vm.translate(vcpu.ghcb_msr)
            if spa is not None:
                page = self.host.machine.host_read(spa, PAGE_SIZE)
                self.exit_views.append((f"{where}: GHCB", page))

    def logs(self) -> Iterator[tuple[str, bytes]]:
        """Every log the host keeps: exits, faults, and the relays' message pages."""
        for number, fault in enumerate(self.host.machine.faults):
            yield f"fault log #{number}", str(fault).encode()
        for hook in self.host.exit_hooks:
            log = getattr(hook, "log", None)
            if isinstance(log, list):
                for number, entry in enumerate(log):
                    parts = entry if isinstance(entry, tuple) else (entry,)
                    for part in parts:
                        if isinstance(part, bytes | bytearray):
                            yield f"{type(hook).__name__} log #{number}", bytes(part)
                        elif isinstance(part, str):
                            yield f"{type(hook).__name__} log #{number}", part.encode()

    def scan(self, scanner: CanaryScan, files: Mapping[str, bytes] = {}) -> list[Leak]:
        """Every leak in DRAM, the exit views, the logs and ``files``."""
        leaks = scanner.scan_dram(self.host.machine.dram)
        leaks += scanner.scan_all(self.exit_views)
        leaks += scanner.scan_all(self.logs())
        leaks += scanner.scan_all((f"file {name}", data) for name, data in files.items())
        return leaks
