"""What an attack acts on: a live VM, the host's powers over it, and the guest going about its
business while it is attacked.

The host's powers are real objects (:class:`~cvm.host.vmm.Hypervisor` with its machine, DRAM,
RMP, nested page tables and exit hooks; the PSP; the files it stores). What the *guest* does —
store its secret, read it back, take an exit, ask for a report, boot from the disk — is driven
by the runner (:mod:`cvm.scenarios.boot_lab`), which implements this protocol with the real
guest of a VM booted from its image. An attack only ever observes the guest through what these
calls return, as a test harness observes a workload: the host itself learns nothing from them.

Host-side values crossing the protocol are bytes or host records; nothing of the guest's code
is imported here (``host`` never imports ``guest``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.vm import Mode
from cvm.host.vmm import Guest, Hypervisor


@dataclass(frozen=True)
class Release:
    """What the relying party did with a launch: released the owner's secret, or refused it.

    ``claims`` are the appraisal's failed claims (``measurement``, ``policy.debug``,
    ``reported_tcb``, ``report_data``, ``chain`` ...); ``gated`` says whether any appraisal ran
    at all (False where the mode has no evidence to appraise).
    """

    released: bool
    gated: bool
    claims: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class Evidence:
    """Attestation evidence as it crosses the host's network: the report, the VCEK (DER) and
    the vendor's certificate chain (PEM, ASK then ARK), each as bytes."""

    report: bytes
    vcek: bytes
    cert_chain: bytes


@dataclass(frozen=True)
class BootReport:
    """How a boot of the host's files went, as the guest's trace tells it.

    ``refused_by`` is the stage that stopped the boot (``firmware``, ``shim``, ``grub``,
    ``kernel``, ``initramfs``, ``svsm``, ``launch``) and ``error`` its message and error class;
    ``unsealed`` says whether the vTPM released the volume key; ``workload`` whether the
    workload read back on the encrypted root what it wrote (or expected to find).
    """

    booted: bool
    unsealed: bool
    workload: bool
    refused_by: str = ""
    error: str = ""
    error_class: str = ""
    data: bytes = b""


class Lab(Protocol):
    """A live VM of one mode on one host, and the runner that drives its guest."""

    @property
    def mode(self) -> Mode: ...

    @property
    def host(self) -> Hypervisor: ...

    @property
    def guest(self) -> Guest: ...

    @property
    def psp(self) -> SecureProcessor | None: ...

    @property
    def secret(self) -> bytes:
        """The workload's secret, which the guest keeps in private memory at ``secret_gpa``."""
        ...

    @property
    def secret_gpa(self) -> int: ...

    @property
    def spare_gpa(self) -> int:
        """Another private page of the guest, for attacks that need two."""
        ...

    # -- the guest, acting ------------------------------------------------------------------
    def guest_write(self, gpa: int, data: bytes) -> None:
        """The guest writes through its vCPU (raises FaultRaised when the access faults)."""

    def guest_read(self, gpa: int, size: int) -> bytes:
        """The guest reads through its vCPU (raises FaultRaised when the access faults)."""
        ...

    def guest_set_register(self, name: str, value: int) -> None: ...

    def guest_register(self, name: str) -> int: ...

    def guest_exit(self) -> None:
        """The guest takes an automatic exit (HLT): the host runs, then resumes it."""

    def guest_cpuid(self, leaf: int) -> tuple[int, int, int, int]:
        """The CPUID values the guest ends up trusting for ``leaf``."""
        ...

    def guest_interrupt_masked(self) -> None:
        """The guest masks interrupts (RFLAGS.IF = 0) for a critical section."""

    def guest_events(self) -> list[int]:
        """The vectors delivered to the guest so far."""
        ...

    # -- launch and evidence ----------------------------------------------------------------
    def launch(
        self, *, flip_firmware_bit: int | None = None, debug: bool = False,
        rollback: bool = False, forge_reference: bool = False
    ) -> Release:
        """Launch the owner's firmware again as the host chooses (a bit flipped, a debug
        policy, the PSP firmware rolled back), then let the relying party decide. With
        ``forge_reference`` the host first launches once to learn the digest the PSP measures
        and writes it into the reference values it was handed."""
        ...

    def attest(self) -> tuple[bytes, Evidence]:
        """A genuine attestation round: the relying party's nonce and the evidence the guest
        sent back (through the host's network, so the host has a copy)."""
        ...

    def appraise(self, evidence: Evidence, nonce: bytes) -> Release:
        """The relying party appraises ``evidence`` against its reference values and ``nonce``."""
        ...

    def guest_request_report(self) -> str:
        """The guest asks the PSP for a report through the host's relay; "ok" or the error
        class and message the guest's driver raised."""
        ...

    # -- files at rest and booting from them ------------------------------------------------
    def bundle(self) -> Path:
        """The host's copy of this VM's files (disk image, firmware, varstore, vTPM state,
        manifest): everything the owner handed over, which the attack may change at will."""
        ...

    def foreign_bundle(self) -> Path:
        """The files of another owner's VM that the same host runs (read them, do not edit)."""
        ...

    def old_release(self) -> Path:
        """Boot files of an earlier release of this owner's image that the host kept: the old
        shim (since revoked in dbx) and the old GRUB (since revoked by SBAT), both signed."""
        ...

    def boot(self) -> BootReport:
        """Boot the VM from :meth:`bundle` as it is now and trace what happens."""
        ...
