"""``cvm image build OUT --target qemu``: an image the real stack boots (QEMU + OVMF + a TPM).

The disk is a GPT disk: the ESP in the clear (FAT32) and the LUKS2 root, pre-encrypted. Two
boot chains (docs/image-bundle.md, "The QEMU target"):

* ``shim-grub`` — the distribution's keys: Debian's Microsoft-signed shim, Debian-signed GRUB
  and kernel, a ``grub.cfg``; the varstore is Debian's ``OVMF_VARS_4M.ms.fd`` as shipped;
* ``uki`` — the owner's keys: a UKI of systemd's EFI stub, the kernel and the initramfs,
  signed with the owner's db key; the varstore enrolls the owner's PK, KEK and db.

The initramfs (:mod:`cvm.image.qemu_initramfs`) unseals the root's key in the VM's TPM. The
PCRs are predicted from the disk as written, for the VM profile (:mod:`cvm.image.vm_profile`),
and — given the target TPM's storage root key (``--srk-public``, a TPM2B_PUBLIC as
``tpm2_readpublic -o`` writes it) — the root's key is sealed offline to that TPM under the
predicted PCRs (:mod:`cvm.image.offline_seal`) in LUKS2 token 0. Without an SRK the root opens
only with the owner's key (``owner/root.key``).

A seeded build (``QemuTargetSpec.seed``, ``cvm image build --target qemu --seed N``) is
reproducible as the emulated target's is (:mod:`cvm.image.bundle`): every random choice comes
from SHAKE-256 of the seed under :data:`SEED_LABEL` — the owner's keys (uki: derived from the
seed, serials included), the root's key, the ESP's volume serial, the LUKS2 volume key, UUID,
salts and stripes, the seal's object seed and ephemeral ECC key — and every time stamp (the
ESP's directory entries, the certificates' ``notBefore``) is the build's time
(:mod:`cvm.image.build_epoch`); the GPT identifiers are fixed for every build. The same seed,
Debian packages and SRK give the same bytes in every file, and the manifest says
``"seeded": true``: such an image's secrets follow from a small integer — tests and demos
only.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvm.crypto.drbg import OsRandom, SeededRandom
from cvm.disk.conversion import encrypt_image
from cvm.disk.esp import write_esp
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.errors import UsageError
from cvm.files import write_atomically
from cvm.formats.gpt import partition_types
from cvm.formats.gpt.header import LBA_SIZE
from cvm.formats.gpt.partition_entry import PartitionEntry
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.formats.pe.section_append import append_sections
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.tpm2b import tpm2b
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import DEFAULT_LOADER, GptDisk
from cvm.image.build_epoch import build_epoch, check_epoch, epoch_datetime
from cvm.image.debian_packages import BootInputs
from cvm.image.keys import OwnerKeys
from cvm.image.offline_seal import seal_for_import
from cvm.image.pcr_prediction import predict
from cvm.image.pcr_report import pcr_report
from cvm.image.qemu_initramfs import TOKEN_TYPE, sealed_initramfs
from cvm.image.staging import build_in_place
from cvm.image.vm_profile import VmProfile
from cvm.vtpm.policy import PolicyDigest
from cvm.wire import Guid

SCHEMA = "cvm-qemu-image/1"
MANIFEST = "qemu-image.json"
MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
CHAINS = ("shim-grub", "uki")
SEALED_PCRS = {"shim-grub": (4, 7, 8, 9), "uki": (4, 7, 11)}
# no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can fail (panic)
CMDLINE = "console=ttyS0 panic=-1 no_timer_check"
GRUB_CFG = f"set timeout=0\nlinux /vmlinuz {CMDLINE}\ninitrd /initrd.img\nboot\n"
DEFAULT_WORKLOAD = b"CVM-WORKLOAD: the owner's data, readable only through the predicted boot\n"
ROOT_KEY_SIZE = 32
# The root's keyslot holds a 256-bit random key, not a passphrase: a slow KDF adds nothing and
# would cost the TCG guest minutes.
ROOT_KDF = KdfSpec("pbkdf2", iterations=1000)
DISK_MIB, ESP_FIRST_LBA, ESP_MIB, ROOT_PLAIN_MIB = 64, 2048, 60, 1
DISK_GUID = Guid.parse("7e5a1b3c-2d4f-4a6b-8c9d-0e1f2a3b4c5d")
ESP_GUID = Guid.parse("1c2b3a49-5867-4e8d-9a0b-c1d2e3f40516")
ROOT_GUID = Guid.parse("2d3c4b5a-6978-4f8e-9a0b-c1d2e3f40517")
ESP_SERIAL_SIZE = 4  # the FAT32 volume serial (BS_VolID)
SEED_LABEL = b"cvm qemu image"
"""The label of a seeded build's stream (the emulated target's is ``cvm image``)."""
Random = Callable[[int], bytes]


@dataclass(frozen=True)
class QemuTargetSpec:
    chain: str
    profile: VmProfile
    srk: Public | None = None
    workload: bytes = DEFAULT_WORKLOAD
    seed: int | None = None
    source_date_epoch: int | None = None

    def check(self) -> None:
        if self.chain not in CHAINS:
            raise UsageError(f"--chain {self.chain!r}: the qemu target builds "
                             f"{' or '.join(CHAINS)}")
        if not self.workload or len(self.workload) > ROOT_PLAIN_MIB << 20:
            raise UsageError("the workload must be 1 byte to 1 MiB")
        if self.source_date_epoch is not None:
            check_epoch(self.source_date_epoch)


def build_random(seed: int | None) -> Random:
    """The build's random: SHAKE-256 of ``seed`` under :data:`SEED_LABEL`, or the operating
    system's for ``None``."""
    if seed is None:
        return OsRandom()
    return SeededRandom(str(seed).encode(), SEED_LABEL)


def esp_tree(chain: str, inputs: BootInputs, initrd: bytes,
             keys: OwnerKeys | None) -> dict[str, bytes]:
    """The ESP's files (path -> contents) for ``chain``."""
    if chain == "shim-grub":
        return {"EFI/BOOT/BOOTX64.EFI": inputs.shim, "EFI/BOOT/grubx64.efi": inputs.grub,
                "EFI/debian/grub.cfg": GRUB_CFG.encode(), "vmlinuz": inputs.kernel,
                "initrd.img": initrd}
    if inputs.stub is None or keys is None:
        raise UsageError("the uki chain needs systemd's EFI stub and the owner's keys")
    uki = append_sections(inputs.stub, [(".osrel", b"ID=cvm\n"), (".cmdline", CMDLINE.encode()),
                                        (".linux", inputs.kernel), (".initrd", initrd)])
    return {"EFI/BOOT/BOOTX64.EFI": keys.sign_db(uki)}


def write_disk(out: Path, tree: Path, root: bytes, serial: int | None = None,
              epoch: int | None = None) -> None:
    """A GPT disk: p1 the ESP holding ``tree`` (volume ``serial``, entries stamped ``epoch``;
    ``None``: mtools' choice, the clock), p2 the LUKS2 ``root``."""
    root_mib = -(-len(root) // (1 << 20))
    size = (DISK_MIB + root_mib + 1) << 20  # + room for the backup GPT
    with out.open("wb") as handle:
        handle.truncate(size)
    first = (DISK_MIB << 20) // LBA_SIZE
    entries = [
        PartitionEntry(partition_types.ESP, ESP_GUID, ESP_FIRST_LBA,
                       ESP_FIRST_LBA + (ESP_MIB << 20) // LBA_SIZE - 1,
                       name="EFI System Partition"),
        PartitionEntry(partition_types.LINUX_DATA, ROOT_GUID, first,
                       first + (root_mib << 20) // LBA_SIZE - 1, name="root"),
    ]
    table = PartitionTable.create(size // LBA_SIZE, entries, DISK_GUID)
    with out.open("r+b") as handle:
        for offset, data in table.blocks():
            handle.seek(offset)
            handle.write(data)
        handle.seek(DISK_MIB << 20)
        handle.write(root)
    write_esp(out, ESP_FIRST_LBA * LBA_SIZE, ESP_MIB << 20, tree, serial=serial, epoch=epoch)


def predict_disk(disk: Path, files: dict[str, bytes], varstore: Varstore,
                 profile: VmProfile) -> dict[str, Any]:
    """The PCRs of booting ``disk`` in ``profile`` (both banks; unknown ones with a reason) —
    the document ``cvm pcr predict --json`` prints."""
    with disk.open("rb") as handle:
        gpt = GptDisk.from_disk(handle.read(1 << 20), 1)
    esp = EspFiles({"/" + path: data for path, data in files.items()})
    chain = BootChain(esp, profile.with_boot_options(varstore), gpt, profile.settings(),
                      DEFAULT_LOADER)
    banks = ("sha1", "sha256")
    statuses = pcr_report(predict(chain, banks), profile, None)
    document: dict[str, Any] = {
        bank: {str(s.pcr): None if s.values is None else s.values[bank].hex() for s in statuses}
        for bank in banks
    }
    document["profile"] = profile.name
    document["unknown"] = {str(s.pcr): {"reason": s.reason, "settle": s.settle}
                           for s in statuses if s.values is None}
    return document


def seal_token(srk: Public, key: bytes, pcrs: tuple[int, ...], predicted: dict[str, Any],
               random: Callable[[int], bytes]) -> dict[str, Any]:
    """The LUKS2 token: ``key`` sealed for the TPM of ``srk`` under the predicted ``pcrs``."""
    values = predicted["sha256"]
    unknown = [p for p in pcrs if values.get(str(p)) is None]
    if unknown:
        raise UsageError(f"cannot seal to PCR {unknown}: cvm cannot predict them for this image")
    policy = PolicyDigest.start().pcr(PcrSelectionList.of("sha256", list(pcrs)),
                                      [bytes.fromhex(values[str(p)]) for p in pcrs])
    seal = seal_for_import(srk, key, policy.value, random)
    return {
        "type": TOKEN_TYPE, "keyslots": ["0"], "cvm-pcr-bank": "sha256", "cvm-pcrs": list(pcrs),
        "cvm-public": base64.b64encode(tpm2b(seal.public.to_bytes())).decode(),
        "cvm-duplicate": base64.b64encode(tpm2b(seal.duplicate)).decode(),
        "cvm-seed": base64.b64encode(tpm2b(seal.encrypted_seed)).decode(),
    }


def build_qemu_image(out: Path, spec: QemuTargetSpec, inputs: BootInputs,
                     random: Random | None = None) -> dict[str, Any]:
    """Build the image ``out`` (see the module docstring): a new folder, an empty one, or an
    earlier qemu image, which it replaces whole; returns its manifest. The image is written into
    a hidden folder beside ``out`` and renamed into place only when it is complete
    (:mod:`cvm.image.staging`), so a build that fails leaves ``out`` as it was; a folder that
    holds anything else is refused. ``random`` replaces the build's random
    (:func:`build_random` of the spec's seed; tests)."""
    spec.check()
    return build_in_place(Path(out), lambda staging: write_qemu_image(staging, spec, inputs,
                                                                       random),
                          MANIFEST, "a qemu image", "the qemu image")


def qemu_manifest(spec: QemuTargetSpec, files: dict[str, bytes], sealed: bool
                  ) -> dict[str, Any]:
    """``qemu-image.json``: what was built, for which VM profile, where each file is, the ESP's
    paths and, when the root's key is sealed (token 0), to which sha256 PCRs."""
    return {
        "schema": SCHEMA, "seeded": spec.seed is not None, "chain": spec.chain,
        "profile": spec.profile.name, "qemu_args": spec.profile.qemu_args,
        "disk": "disk.img", "varstore": "OVMF_VARS.fd", "firmware": str(OVMF_CODE),
        "predicted": "predicted-pcrs.json", "esp": sorted("/" + p for p in files),
        "sealed": {"token": 0, "bank": "sha256", "pcrs": list(SEALED_PCRS[spec.chain])}
        if sealed else None,
    }


def write_qemu_image(out: Path, spec: QemuTargetSpec, inputs: BootInputs,
                     random: Random | None = None) -> dict[str, Any]:
    """Write every file of the image into the folder ``out``, which exists and is empty (the
    staging folder of :func:`build_qemu_image`); returns the manifest."""
    seeded = spec.seed is not None
    rng = random or build_random(spec.seed)
    epoch = build_epoch(seeded, spec.source_date_epoch)
    owner = out / "owner"
    owner.mkdir(mode=0o700)  # the owner's keys: never readable by others
    pcrs = SEALED_PCRS[spec.chain]
    keys = None
    if spec.chain == "uki":
        keys = OwnerKeys.generate(rng, vendor=False, pcr_policy=False, seeded=seeded,
                                  not_before=epoch_datetime(epoch))
        keys.save(owner)
        varstore = keys.varstore()
    else:
        try:
            varstore = Varstore.parse(MS_VARS.read_bytes())
        except OSError:
            raise UsageError(f"{MS_VARS} is missing (Debian's package ovmf)") from None
    (out / "OVMF_VARS.fd").write_bytes(varstore.to_bytes())
    files = esp_tree(spec.chain, inputs, sealed_initramfs(inputs.busybox, inputs.modules, pcrs),
                     keys)
    key = rng(ROOT_KEY_SIZE)
    serial = int.from_bytes(rng(ESP_SERIAL_SIZE), "little")
    write_atomically(owner / "root.key", key)  # created 0600, never readable by others
    with tempfile.TemporaryDirectory(prefix="cvm-qemu-") as scratch:
        work = Path(scratch)
        for path, data in files.items():
            (work / "esp" / path).parent.mkdir(parents=True, exist_ok=True)
            (work / "esp" / path).write_bytes(data)
        (work / "root.plain").write_bytes(spec.workload.ljust(ROOT_PLAIN_MIB << 20, b"\0"))
        encrypt_image(work / "root.plain", work / "root.img", key, ROOT_KDF, random=rng)
        disk = out / "disk.img"
        write_disk(disk, work / "esp", (work / "root.img").read_bytes(), serial, epoch)
        predicted = predict_disk(disk, files, varstore, spec.profile)
        if spec.srk is not None:
            token = seal_token(spec.srk, key, pcrs, predicted, rng)
            with FileStorage(work / "root.img") as storage:
                Luks2Volume.open(storage, random=rng).add_token(token, 0)
            with disk.open("r+b") as handle:
                handle.seek(DISK_MIB << 20)
                handle.write((work / "root.img").read_bytes())
    (out / "predicted-pcrs.json").write_text(json.dumps(predicted, indent=1) + "\n")
    manifest = qemu_manifest(spec, files, spec.srk is not None)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
