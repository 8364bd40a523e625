"""A guest: boot it — SVSM and vTPM, firmware, shim → GRUB → kernel or UKI, initramfs — and
run its workload, all on its own vCPU and in its own memory.

Everything here runs inside the VM. It touches memory only through its vCPU (the RMP, the
C-bit and the encryption engine apply) and talks to the host only as a guest can: exits, the
GHCB and pages it chose to share. What it gets from the host are bytes: the disk (a block
device), the firmware image it was launched with, the varstore, and — under SEV-SNP — the
vTPM's sealed state. Which stage module runs is decided by what the firmware verified:
:func:`cvm.guest.boot.chain.loader_kind` of the signed loader (UKI, or shim → GRUB), never by
running bytes from the disk.

The vTPM is the SVSM's under SEV-SNP (the guest OS at VMPL1 reaches it with SVSM calls) and
the host's in the other modes (a shared command buffer and a doorbell). Either way every
boot stage measures straight into it (:class:`~cvm.guest.tpm.pcr_bank.VtpmPcrBank`), and the
firmware keeps the event log in guest memory (:class:`~cvm.guest.boot.event_log_area.
EventLogArea`), which the OS reads back for the trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cvm.disk.storage import Storage
from cvm.errors import StateError
from cvm.formats.tcg.replay import replay
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.boot_disk import BootDisk
from cvm.guest.boot.chain import BootChain, BootResult
from cvm.guest.boot.event_log_area import EventLogArea
from cvm.guest.boot.firmware import DEFAULT_LOADER, ovmf_model_settings
from cvm.guest.boot.initramfs import Initramfs
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.guest.svsm.key_release import KeyReleaseAgent, StateKeyBroker
from cvm.guest.svsm.svsm import Svsm
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.host_transport import HostTpmTransport
from cvm.guest.tpm.pcr_bank import VtpmPcrBank
from cvm.guest.tpm.svsm_guest import SvsmGuest
from cvm.guest.trace import VmTrace, steps_from_log
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import Vcpu
from cvm.vtpm.state import PersistentState
from cvm.vtpm.state_file import RollbackCounter

BANKS = ("sha1", "sha256")
BOOT_PAGES = 2  # the guest OS's first pages, which the SVSM validates for it at start


@dataclass(frozen=True)
class GuestMemoryMap:
    """The guest OS's own pages (guest-physical), below the launch sections."""

    first: int = 0x20000
    pages: int = 0x30
    tpm_buffer: int = 0x20000
    scratch: int = 0x21000
    ghcb: int = 0x22000
    key: int = 0x23000
    data: int = 0x24000  # two pages
    log: int = 0x30000
    log_pages: int = 0x10


class GuestVm:
    """The guest on its boot vCPU; ``trace`` records what it did (no secret)."""

    def __init__(self, vcpu: Vcpu, random: Callable[[int], bytes], trace: VmTrace,
                 memory: GuestMemoryMap = GuestMemoryMap(), banks: tuple[str, ...] = BANKS
                 ) -> None:
        self.vcpu, self.random, self.trace, self.memory, self.banks = (
            vcpu, random, trace, memory, banks)
        self.kernel = SevGuest(vcpu)
        self.svsm: Svsm | None = None
        self.client: TpmClient | None = None
        self.pcrs: VtpmPcrBank | None = None
        self.log_area = EventLogArea(self.kernel, memory.log, memory.log_pages)
        self.boot_result: BootResult | None = None
        self.initramfs: Initramfs | None = None
        self.disk: BootDisk | None = None
        self.uki: bytes | None = None
        self.stage = "start"

    def _phase(self, name: str, started: float) -> None:
        self.trace.timings[name] = self.trace.timings.get(name, 0.0) + (
            time.perf_counter() - started)

    # ---- the TPM -------------------------------------------------------------------------
    def start_svsm(self, secrets_gpa: int, counter: RollbackCounter, stored: bytes,
                   broker: StateKeyBroker | KeyReleaseAgent) -> None:
        """SEV-SNP: the SVSM at VMPL0 attests, gets the state key, opens the vTPM state, and
        runs the guest OS at VMPL1, whose pages it validates and grants."""
        self.stage, started = "svsm", time.perf_counter()
        svsm = Svsm.start(self.vcpu, secrets_gpa, counter, self.random, stored, broker=broker)
        self.svsm = svsm
        if isinstance(broker, KeyReleaseAgent):
            self.trace.add("SVSM", "attested", "to the key broker through the host (RCAR: "
                           "launch evidence, SNP report at VMPL0, REPORT_DATA = "
                           "SHA-384(nonce, TEE key))")
            self.trace.add("key broker", "released", "the vTPM state key, a JWE to the SVSM's "
                           "TEE key")
        else:
            self.trace.add("SVSM", "attested", "to the relying party (SNP report at VMPL0, "
                           "REPORT_DATA = SHA-512(nonce ‖ ephemeral P-384 key))")
            self.trace.add("relying party", "released", "the vTPM state key, wrapped to the "
                           "SVSM's ephemeral key")
        self.trace.add("SVSM", "opened", f"the vTPM state (rollback counter {counter.read()})")
        m = self.memory
        svsm.grant(m.first, BOOT_PAGES)  # the guest OS's boot pages: its TPM buffer, scratch
        self.trace.add("SVSM", "started", f"the guest OS at VMPL{self.vcpu.vmpl}")
        transport = SvsmGuest(self.vcpu, svsm, m.tpm_buffer, m.scratch)
        rest = [m.first + i * PAGE_SIZE for i in range(BOOT_PAGES, m.pages)]
        transport.pvalidate(rest)
        self.trace.add("guest OS", "validated", f"{len(rest)} pages of its memory through "
                       "SVSM_CORE_PVALIDATE")
        self.client = TpmClient(transport.tpm_execute, random=self.random)
        self._phase("svsm", started)

    def start_host_tpm(self) -> None:
        """plain/sev/sev-es: the host's vTPM, through a shared buffer and a doorbell."""
        self.stage, started = "firmware", time.perf_counter()
        self.kernel.accept(self.memory.first, self.memory.pages * PAGE_SIZE)
        if self.kernel.mode.encrypts_registers:
            self.kernel.setup_ghcb(self.memory.ghcb)
        transport = HostTpmTransport(self.kernel, self.memory.tpm_buffer)
        transport.start()
        self.client = TpmClient(transport.execute, random=self.random)
        self.trace.add("firmware", "found", "the host's vTPM (outside the TEE)")
        self._phase("tpm", started)

    # ---- the boot chain ------------------------------------------------------------------
    def boot(self, disk: Storage, varstore: bytes, firmware: bytes) -> BootResult:
        """Firmware (Secure Boot, measured boot) → shim → GRUB → kernel, or → UKI."""
        if self.client is None:
            raise StateError("start the vTPM before booting")
        self.stage, started = "firmware", time.perf_counter()
        self.client.startup()
        self.pcrs = VtpmPcrBank(self.client, self.banks)
        self.log_area.reserve()
        boot_disk = self.disk = BootDisk.open(disk)
        esp = boot_disk.esp_files()
        self._phase("esp", started)
        started = time.perf_counter()
        chain = BootChain(esp, Varstore.parse(varstore), boot_disk.gpt(),
                          ovmf_model_settings(firmware))
        result = chain.run(self.pcrs, sink=self.log_area.store)
        self.boot_result = result
        self.trace.stages = result.stages
        self.trace.steps += steps_from_log(self.log_area.load())
        self.trace.add(result.stages[1], "started", f"{result.request.kernel_path} "
                       f"(cmdline: {result.request.cmdline})")
        self._phase("boot chain", started)
        self.uki = esp.read(DEFAULT_LOADER) if result.stages[1] == "uki" else None
        return result

    def open_root(self) -> None:
        """The initramfs: unseal, open the LUKS2 root, mount the file store."""
        if self.client is None or self.boot_result is None or self.disk is None:
            raise StateError("boot before opening the root")
        self.stage, started = "initramfs", time.perf_counter()
        m = self.memory
        self.initramfs = Initramfs(self.kernel, self.client, self.disk,
                                   self.boot_result.request.initrd, self.uki, m.key, m.data,
                                   self.random)
        opened = self.initramfs.open_root()
        self.trace.root = opened
        self.trace.add("initramfs", "unsealed", f"token {opened.token} ({opened.policy} policy, "
                       f"{opened.pcr_bank} PCR {'+'.join(map(str, opened.pcrs))}) through the "
                       "vTPM in a policy session")
        self.trace.add("initramfs", "opened", f"LUKS2 {opened.luks_uuid} keyslot "
                       f"{opened.keyslot} with dm-crypt; volume key in a guest page")
        self._phase("initramfs", started)

    def run_workload(self) -> None:
        if self.initramfs is None:
            raise StateError("open the root before running the workload")
        self.stage, started = "workload", time.perf_counter()
        result = self.initramfs.run_workload()
        self.trace.workload = result
        self.trace.add("workload", "wrote", f"{result.size} secret bytes to {result.path} and "
                       f"read them back: {'equal' if result.round_trip else 'DIFFERENT'}")
        self._phase("workload", started)

    def finish(self) -> None:
        """Read the PCRs from the vTPM and replay the log from guest memory into the trace."""
        if self.client is None or self.pcrs is None:
            return
        started = time.perf_counter()
        data = self.log_area.read()
        log = self.log_area.parse(data)
        self.trace.event_log = data
        self.trace.replayed = {bank: dict(values) for bank, values in replay(log).items()}
        self.trace.pcrs = {bank: self.pcrs.values(tuple(range(24)), bank)
                           for bank in self.banks}
        self.trace.extends = self.pcrs.extends
        if self.svsm is not None:
            self.trace.svsm_calls = self.svsm.calls
        self._phase("trace", started)

    def secrets(self) -> dict[str, bytes]:
        """What must never reach the host, read back through the guest (for canary scans)."""
        found: dict[str, bytes] = {}
        if self.initramfs is not None:
            found.update(self.initramfs.secrets())
        svsm = self.svsm
        if svsm is not None:
            state = PersistentState.from_bytes(svsm.read_state())
            for hierarchy, seed in state.seeds.items():
                found[f"vTPM seed {hierarchy:#x}"] = seed
            for hierarchy, proof in state.proofs.items():
                found[f"vTPM proof {hierarchy:#x}"] = proof
            found["vTPM state key"] = svsm.at_vmpl0(svsm.keys.state_key)
            found["VMPCK0"] = svsm.at_vmpl0(lambda: svsm.requester.key)
        return found
