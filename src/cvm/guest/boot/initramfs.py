"""The initramfs: unseal the root's key with the vTPM, open the LUKS2 root, run the workload.

What systemd's initrd does with a ``systemd-tpm2`` token (``systemd-cryptsetup`` with
``tpm2-device=auto``; systemd ``src/cryptsetup/cryptsetup-tokens/``, version 252), driven by
the manifest the measured initrd carries (``/etc/cvm/initramfs.json``, docs/image-bundle.md):
find the root whose LUKS2 UUID the manifest names; for each ``systemd-tpm2`` token replay its
policy in a policy session on the vTPM — PolicyAuthorize with the UKI's signed PCR policy
(``.pcrsig``, the entry whose policy digest matches the live PCRs), PolicyPCR over the token's
PCRs — and TPM2_Unseal the secret; base64 of the secret is the passphrase of the token's
keyslot, which yields the volume key; dm-crypt maps the data segment with it
(:mod:`cvm.disk.dm_crypt`) and the root's file store (``cvm-filestore/2``; a
``cvm-filestore/1`` opens read only) is mounted.

The volume key lives where a kernel keeps it: in guest memory. It is written through the vCPU
into a private page of the guest OS and read back from there to set up the mapping; the
workload's data likewise passes through guest pages on its way to and from the encrypted root.
The vTPM refuses to unseal unless the PCRs equal the values the owner sealed to (or, for a
signed policy, values the owner signed) — so a changed boot stage, command line or initrd
leaves the root closed.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cvm.disk.dm_crypt import CryptDevice
from cvm.disk.file_store import FileStore
from cvm.disk.keyslot import open_keyslot
from cvm.disk.volume import Luks2Volume
from cvm.errors import CvmError, FormatError, StateError, StatusError, WrongKeyError
from cvm.formats.initramfs import InitramfsManifest, parse_initramfs
from cvm.formats.pe.image import PeImage
from cvm.formats.tpm2.response_code import TpmRc, base_code
from cvm.guest.boot.boot_disk import BootDisk
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.luks_token import SystemdTpm2Token, signed_policy, tpm2_tokens
from cvm.guest.tpm.seal import SignedPolicy, unseal
from cvm.hardware.memory.dram import PAGE_SIZE

WORKLOAD_SIZE = PAGE_SIZE
# the Unseal's refusals that mean the live PCRs are not the ones the token's policy names
_PCRS_DIFFER = frozenset((TpmRc.POLICY_FAIL, TpmRc.PCR_CHANGED))
WORKLOAD_FILE = "log"


@dataclass(frozen=True)
class RootOpened:
    """What the initramfs did to open the root (no secret in it)."""

    token: int
    keyslot: int
    policy: str
    pcrs: tuple[int, ...]
    pcr_bank: str
    luks_uuid: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class WorkloadResult:
    """The workload's round trip through the encrypted root (the data's digest, not the data)."""

    path: str
    size: int
    round_trip: bool
    data_sha256: str


class Initramfs:
    """The initramfs of a guest OS on ``kernel``'s vCPU. ``initrd`` is the measured initrd,
    ``uki`` the verified UKI (for its ``.pcrsig``) or None; ``key_gpa`` (one page) and
    ``data_gpa`` (two pages) are private pages of the guest OS, already accepted: the
    kernel's keyring and the workload's buffers."""

    def __init__(self, kernel: SevGuest, client: TpmClient, disk: BootDisk, initrd: bytes,
                 uki: bytes | None, key_gpa: int, data_gpa: int,
                 random: Callable[[int], bytes]) -> None:
        self.kernel, self.client, self.disk = kernel, client, disk
        self.initrd, self.uki = initrd, uki
        self.key_gpa, self.data_gpa, self.random = key_gpa, data_gpa, random
        self.manifest: InitramfsManifest | None = None
        self.store: FileStore | None = None
        self.key_size = 0

    def open_root(self) -> RootOpened:
        """Manifest → token → policy session → unseal → keyslot → key in guest memory →
        dm-crypt → file store."""
        _, manifest = parse_initramfs(self.initrd)
        self.manifest = manifest
        root = self.disk.root_partition()
        volume = Luks2Volume.open(root)
        if volume.uuid != manifest.luks_uuid:
            raise StateError(f"initramfs: the root partition holds LUKS2 volume {volume.uuid}, "
                             f"the initrd asks for {manifest.luks_uuid}")
        tokens = tpm2_tokens(volume)
        if not tokens:
            raise StateError("initramfs: the root's LUKS2 header has no systemd-tpm2 token")
        refusals: list[CvmError] = []
        for number, token in sorted(tokens.items()):
            try:
                secret = unseal(self.client, token.blob, token.seal_policy(),
                                signed=self._signed_policy(token))
            except (StatusError, FormatError) as refused:
                refusals.append(refused)
                continue
            slot, volume_key = self._open_keyslot(volume, token, base64.b64encode(secret))
            self.kernel.cpu.write(self.key_gpa, volume_key)
            self.key_size = len(volume_key)
            device: CryptDevice = volume.data_device(
                self.kernel.cpu.read(self.key_gpa, self.key_size))
            self.store = FileStore.open(device)
            policy = "signed" if token.pubkey_pem is not None else "pcrs"
            return RootOpened(number, slot, policy, token.pcrs + token.pubkey_pcrs,
                              token.pcr_bank, volume.uuid, tuple(self.store.names()))
        last = refusals[-1]
        if not isinstance(last, StatusError):  # no answer from the vTPM to read a reason from
            raise StatusError(f"initramfs: none of {len(tokens)} token(s) could unseal the root "
                              f"key: {last}", 0)
        why = (" (the PCRs differ from the sealed policy)"
               if base_code(last.code) in _PCRS_DIFFER else "")
        raise StatusError(f"initramfs: the vTPM refused to unseal the root key of any of "
                          f"{len(tokens)} token(s){why}: {last}", last.code)

    @staticmethod
    def _open_keyslot(volume: Luks2Volume, token: SystemdTpm2Token, passphrase: bytes
                      ) -> tuple[int, bytes]:
        """The token's own keyslot(s) with its passphrase (systemd-cryptsetup does not try
        the others); the volume key, checked against the volume's digest."""
        for slot in token.keyslots:
            keyslot = volume.metadata.keyslots.get(slot)
            if keyslot is None:
                continue
            candidate = open_keyslot(volume.storage, keyslot, passphrase)
            try:
                volume.check_volume_key(candidate)
            except WrongKeyError:
                continue
            return slot, candidate
        raise WrongKeyError(f"initramfs: keyslot(s) {list(token.keyslots)} of the token do "
                            "not open with its secret")

    def _signed_policy(self, token: SystemdTpm2Token) -> SignedPolicy | None:
        """The UKI's signed PCR policy for ``token`` that matches the live PCRs."""
        if token.pubkey_pem is None:
            return None
        if self.uki is None or self.manifest is None or self.manifest.pcr_signature is None:
            raise FormatError("initramfs: a signed-policy token, but no .pcrsig to use")
        section = PeImage.parse(self.uki).section(".pcrsig")
        if section is None:
            raise FormatError("initramfs: the UKI has no .pcrsig section")
        return signed_policy(token, section.loaded_data, self.client, "initramfs: .pcrsig")

    def run_workload(self) -> WorkloadResult:
        """Write secret data from a guest page to the root's file store, read it back into
        another guest page, compare the two pages."""
        if self.store is None or self.manifest is None:
            raise StateError("the workload runs once the root is open")
        cpu = self.kernel.cpu
        path = f"{self.manifest.data_dir.rstrip('/')}/{WORKLOAD_FILE}"
        cpu.write(self.data_gpa, self.random(WORKLOAD_SIZE))
        self.store.write(path, cpu.read(self.data_gpa, WORKLOAD_SIZE))
        cpu.write(self.data_gpa + PAGE_SIZE, self.store.read(path))
        written = cpu.read(self.data_gpa, WORKLOAD_SIZE)
        round_trip = cpu.read(self.data_gpa + PAGE_SIZE, WORKLOAD_SIZE) == written
        return WorkloadResult(path, WORKLOAD_SIZE, round_trip,
                              hashlib.sha256(written).hexdigest())

    def secrets(self) -> dict[str, bytes]:
        """The volume key and the workload's data, read from guest memory (the guest's view),
        for a scan of what the host can read. Never printed."""
        cpu = self.kernel.cpu
        found = {}
        if self.key_size:
            found["volume key"] = cpu.read(self.key_gpa, self.key_size)
        if self.store is not None:
            found["workload data"] = cpu.read(self.data_gpa, WORKLOAD_SIZE)
        return found
