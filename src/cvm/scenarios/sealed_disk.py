"""The disk key sealed by the vTPM: it opens the root only for the boot the owner predicted.

Flows 1, 3 and 5 of ARCHITECTURE.md together. An SEV-SNP guest is launched through the PSP;
its SVSM runs the vTPM at VMPL0, whose state lives in VMPL0 pages and is stored by the host as
a file sealed under a key only this launch measurement can derive. The boot chain's
measurements go to the vTPM; on the first boot the disk key is sealed, in a ``systemd-tpm2``
LUKS2 token, to the PCR values the owner predicted. Every later boot unseals it only if its
PCRs are those values — and the host's tricks with the boot files, the state file or the
firmware each leave the key sealed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cvm.amd.kds import CHIP_ID_SIZE, CHIP_SECRET_SIZE, ChipFuses
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.errors import CvmError
from cvm.formats.ovmf.image import build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tpm2.constants import TpmAlg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.guest.svsm.svsm import Svsm
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.luks_token import enroll, tpm2_tokens, unlock
from cvm.guest.tpm.seal import SealPolicy
from cvm.guest.tpm.svsm_guest import SvsmGuest
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.launch import GuestRequestRelay, SnpLaunchConfig, launch_snp
from cvm.host.vmm import Hypervisor
from cvm.scenarios.boot_attacks import LOADER, SEALED_PCRS, OwnerImage, attack_image
from cvm.vtpm.state_file import MonotonicCounter

SECTIONS = (
    MetadataSection(0x800000, 0x9000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x80E000, 0x1000, SectionType.CPUID),
    MetadataSection(0x80F000, 0x1000, SectionType.SVSM_CAA),
)
BUFFER_GPA, SCRATCH_GPA = 0x20000, 0x21000
SELECTION = PcrSelectionList.of("sha256", list(SEALED_PCRS))
IMAGE_BYTES = 17 << 20


@dataclass(frozen=True)
class SealOutcome:
    """One boot of the sealed disk: did the vTPM start, and did the key come out?"""

    attempt: str
    unsealed: bool
    detail: str


class _Platform:
    """One SNP machine, its PSP and the host, reused across reboots of the same guest."""

    def __init__(self, random_bytes: Callable[[int], bytes]) -> None:
        machine = Machine(8 << 30, random_bytes=random_bytes)
        fuses = ChipFuses(
            "Milan", random_bytes(CHIP_ID_SIZE), random_bytes(CHIP_SECRET_SIZE)
        )
        self.psp = SecureProcessor(machine, fuses)
        self.hv = Hypervisor(machine)
        self.relay = GuestRequestRelay(self.psp)
        self.random = random_bytes
        self.counter = MonotonicCounter()

    def boot(
        self, stored: bytes | None, log: EventLog, firmware_seed: bytes = b"cvm demo firmware"
    ) -> tuple[Svsm, TpmClient]:
        """Launch the guest, start its SVSM on ``stored`` state, measure the boot ``log``."""
        image = build_image(0x40000, sections=SECTIONS, seed=firmware_seed)
        launched = launch_snp(self.hv, self.psp, image, SnpLaunchConfig(), self.relay)
        vcpu = launched.guest.vcpus[0]
        vcpu.vmrun()
        assert launched.secrets_gpa is not None
        svsm = Svsm.start(vcpu, launched.secrets_gpa, self.counter, self.random, stored)
        svsm.grant(BUFFER_GPA, 2)
        client = TpmClient(SvsmGuest(vcpu, svsm, BUFFER_GPA, SCRATCH_GPA).tpm_execute)
        client.startup()
        for event in log.events:
            digest = event.digest(TpmAlg.SHA256)
            if event.event_type != EventType.EV_NO_ACTION and digest is not None:
                client.pcr_extend(event.pcr_index, {TpmAlg.SHA256: digest})
        return svsm, client


def _boot_log(uki: bytes, varstore: Varstore) -> EventLog:
    pcrs = SoftwarePcrBank(("sha256",))
    return BootChain(EspFiles({LOADER: uki}), varstore).run(pcrs).log


def run(owner: OwnerImage, random_bytes: Callable[[int], bytes]) -> list[SealOutcome]:
    """First boot seals; then a genuine reboot, and the host's attempts, try to unseal."""
    platform = _Platform(random_bytes)
    genuine = _boot_log(owner.uki, owner.varstore)
    outcomes = []
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "root.img"
        with image.open("wb") as handle:
            handle.truncate(IMAGE_BYTES)
        svsm, client = platform.boot(None, genuine)
        with FileStorage(image) as storage:
            volume = Luks2Volume.format(storage, b"recovery", KdfSpec("pbkdf2", iterations=1000))
            volume_key = volume.unlock(b"recovery")
            predicted = [owner.predicted[pcr] for pcr in SEALED_PCRS]
            enroll(volume, volume_key, client, SealPolicy(SELECTION), predicted,
                   random_bytes(32))
        first_state = svsm.seal_state()

        def attempt(name: str, stored: bytes, log: EventLog, seed: bytes = b"cvm demo firmware"
                    ) -> bytes | None:
            try:
                svsm, client = platform.boot(stored, log, seed)
                with FileStorage(image, read_only=True) as storage:
                    volume = Luks2Volume.open(storage)
                    key = unlock(volume, tpm2_tokens(volume)[0], client)
            except CvmError as refused:
                outcomes.append(SealOutcome(name, False, str(refused)))
                return None
            opened = key == volume_key
            outcomes.append(SealOutcome(name, opened, "the root opens" if opened else "wrong key"))
            return svsm.seal_state()

        newer = attempt("genuine reboot", first_state, genuine) or first_state
        hostile = _boot_log(*attack_image(owner, "host clears the varstore (Secure Boot off) "
                                                 "and boots its UKI"))
        attempt("host boots its own UKI with Secure Boot off", newer, hostile)
        attempt("host hands back the older vTPM state file", first_state, genuine)
        flipped = bytearray(newer)
        flipped[len(flipped) // 2] ^= 1
        attempt("host flips one bit of the vTPM state file", bytes(flipped), genuine)
        attempt("host launches other firmware with the state", newer, genuine, b"other firmware")
    return outcomes


EXPECTED_UNSEALED = {
    "genuine reboot": True,
    "host boots its own UKI with Secure Boot off": False,
    "host hands back the older vTPM state file": False,
    "host flips one bit of the vTPM state file": False,
    "host launches other firmware with the state": False,
}
