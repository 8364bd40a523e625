"""``cvm image build OUT``: the owner builds a whole confidential VM image as one folder.

The steps (ARCHITECTURE.md, flow 1), each timed: keys (generated or given); the disk plan (GPT
identifiers and the LUKS2 UUID, so the initramfs can name the root); the initramfs; the boot
chain, signed; the varstore and firmware; the prediction of every PCR (sha1 and sha256) and the
event log the owner's own run of the stage modules produces — they must agree, or the build
stops; the disk (ESP, LUKS2 root pre-encrypted); the vTPM manufactured and the volume key sealed
to the predicted PCRs in ``systemd-tpm2`` tokens; the vTPM state sealed at rest and its key
wrapped under the provisioning key; the launch digest of each mode; then every file of the
bundle (docs/image-bundle.md). :func:`load_manifest` reads ``image.json`` back strictly.

A seeded build (``ImageSpec.seed``) is reproducible: every random choice — the owner's keys
included — comes from SHAKE-256 of the seed (:class:`cvm.crypto.drbg.SeededRandom`), every
time stamp is the build's time (:mod:`cvm.image.build_epoch`), and the recovery keyslot's
argon2id runs a fixed :data:`SEEDED_KDF` instead of a calibration that depends on the machine,
so the same seed and inputs give the same bytes in every file. The manifest says so
(``"seeded": true``): such an image's secrets follow from a small integer — tests and demos
only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cvm import __version__
from cvm.crypto.drbg import OsRandom, SeededRandom
from cvm.crypto.kdf import ARGON2_MIN_TIME
from cvm.disk.file_store import FILESTORE_NAME
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.errors import FormatError, InternalError, UsageError
from cvm.files import write_atomically
from cvm.formats.image_manifest import FIRST_MANIFEST_SCHEMA, MANIFEST_SCHEMA, check_schema
from cvm.formats.initramfs import (
    PCR_SIGNATURE_IN_UKI,
    InitramfsManifest,
    build_initramfs,
)
from cvm.formats.tcg.replay import replay
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.image.boot_chain import OS_RELEASE, ChainBuild, build_chain
from cvm.image.build_epoch import build_epoch, check_epoch, epoch_datetime
from cvm.image.disk_layout import DiskPlan, open_root, root_store, write_disk
from cvm.image.firmware import (
    CRTM_VERSION,
    DEFAULT_VCPU_TYPE,
    FOUR_GIB,
    MODES,
    OVMF_SIZE,
    build_firmware,
    firmware_settings,
    launch_digest,
    vcpu_config,
)
from cvm.image.keys import KeyPair, OwnerKeys
from cvm.image.pcr_prediction import predict
from cvm.image.provisioning import OWNER_REFERENCE, wrap_state_key
from cvm.image.reference_values import (
    ImageReferenceValues,
    LaunchReference,
    SnpClaims,
    StageReference,
    TokenReference,
)
from cvm.image.sealing import STATE_KEY_SIZE, TOKEN_KEYSLOT_KDF, OwnerTpm, token_plans
from cvm.image.staging import build_in_place

BANKS = ("sha1", "sha256")
CHAINS = ("uki", "shim-grub")
SEALS = ("pcrs", "signed", "both")
KDF_COSTS = ("default", "fast")
FAST_KDF = KdfSpec("pbkdf2", iterations=1000, hash="sha256")
SEEDED_KDF = KdfSpec(iterations=ARGON2_MIN_TIME)
"""A seeded build's ``default`` cost: argon2id at cryptsetup's defaults but a fixed 4 passes
(cryptsetup's minimum), not calibrated — calibration depends on the machine's speed."""
VOLUME_KEY_SIZE = 64
WORKLOAD = {"schema": "cvm-workload/1", "data_dir": "/srv/data", "writes": "/srv/data/log"}


@dataclass(frozen=True)
class ImageSpec:
    """What to build; every field has a default (``cvm image build OUT``)."""

    chain: str = "uki"
    modes: tuple[str, ...] = ("sev-snp",)
    seal: str | None = None
    vcpus: int = 1
    vcpu_type: str = DEFAULT_VCPU_TYPE
    seed: int | None = None
    source_date_epoch: int | None = None
    kdf_cost: str = "default"
    extra_dbx: tuple[bytes, ...] = ()
    kernel: bytes | None = None

    @property
    def sealing(self) -> str:
        return default_sealing(self.chain, self.seal)

    def check(self) -> None:
        if self.chain not in CHAINS:
            raise UsageError(f"--chain: {self.chain!r} is not one of {', '.join(CHAINS)}")
        if self.sealing not in SEALS:
            raise UsageError(f"--seal: {self.sealing!r} is not one of {', '.join(SEALS)}")
        if self.sealing != "pcrs" and self.chain != "uki":
            raise UsageError("--seal signed|both needs --chain uki (signed PCR policies are "
                             "PCR 11 of a UKI)")
        if not self.modes or any(m not in MODES for m in self.modes):
            raise UsageError(f"--mode: give {', '.join(MODES)} or all")
        if self.kdf_cost not in KDF_COSTS:
            raise UsageError(f"--kdf-cost: {self.kdf_cost!r} is not default or fast")
        if self.source_date_epoch is not None:
            check_epoch(self.source_date_epoch)


def default_sealing(chain: str, seal: str | None) -> str:
    """``--seal`` as given, else ``signed`` for a UKI and ``pcrs`` for shim → GRUB."""
    return seal or ("signed" if chain == "uki" else "pcrs")


def recovery_kdf(cost: str, seeded: bool = False) -> KdfSpec:
    """The recovery keyslot's KDF: cryptsetup's default (argon2id, calibrated; for a seeded
    build :data:`SEEDED_KDF`, not calibrated), or ``fast``."""
    if cost not in KDF_COSTS:
        raise UsageError(f"--kdf-cost: {cost!r} is not default or fast")
    if cost == "fast":
        return FAST_KDF
    return SEEDED_KDF if seeded else KdfSpec()


def parse_modes(text: str) -> tuple[str, ...]:
    """A comma-separated list of modes (``all``: every mode), in canonical order."""
    chosen = {m.strip() for m in text.split(",") if m.strip()}
    if "all" in chosen:
        chosen = (chosen - {"all"}) | set(MODES)
    unknown = sorted(chosen - set(MODES))
    if unknown or not chosen:
        raise UsageError(f"--mode: {', '.join(unknown) or text!r} is not one of "
                         f"{', '.join(MODES)} or all")
    return tuple(m for m in MODES if m in chosen)


@dataclass
class BuiltImage:
    """What :func:`build_image` made, with the time each step took (seconds)."""

    out: Path
    manifest: dict[str, Any]
    reference: ImageReferenceValues
    keys: OwnerKeys
    chain: ChainBuild
    plan: DiskPlan
    timings: dict[str, float] = field(default_factory=dict)


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self._last
        self._last = now


def _kdf_json(kdf: Any) -> dict[str, Any]:
    data = dict(kdf.to_json())
    data.pop("salt", None)
    return data


def build_image(out: Path, spec: ImageSpec = ImageSpec(), keys: OwnerKeys | None = None,
                random: Callable[[int], bytes] | None = None,
                db: KeyPair | None = None) -> BuiltImage:
    """Build the bundle ``out``: a new folder, an empty one, or an earlier bundle, which it
    replaces whole. The bundle is built in a hidden folder beside ``out`` and renamed into
    place only when it is complete, so a build that fails leaves ``out`` as it was; a folder
    that holds anything but a bundle is refused, never overwritten.

    ``keys`` are the owner's (else generated; ``db`` given keeps that signing key), ``random``
    replaces the seed's stream (tests)."""
    spec.check()
    out = Path(out)
    built = build_in_place(out, lambda staging: _build(staging, spec, keys, random, db),
                           "image.json", "an image bundle", "the bundle")
    return replace(built, out=out)


def _build(out: Path, spec: ImageSpec, keys: OwnerKeys | None,
           random: Callable[[int], bytes] | None, db: KeyPair | None) -> BuiltImage:
    clock = _Clock()
    seeded = spec.seed is not None
    rng = random or (SeededRandom(str(spec.seed).encode(), b"cvm image")
                     if seeded else OsRandom())
    epoch = build_epoch(seeded, spec.source_date_epoch)
    signed = spec.sealing in ("signed", "both")
    owner = keys or OwnerKeys.generate(rng, vendor=spec.chain == "shim-grub",
                                       pcr_policy=signed, db=db, seeded=seeded,
                                       not_before=epoch_datetime(epoch))
    clock.lap("keys")
    plan = DiskPlan.make(rng)
    initramfs = InitramfsManifest(plan.luks_uuid, str(plan.root_guid),
                                  PCR_SIGNATURE_IN_UKI if signed else None)
    initrd = build_initramfs(initramfs, OS_RELEASE)
    chain = build_chain(spec.chain, owner, initrd, plan.luks_uuid, signed, spec.kernel)
    clock.lap("boot chain")
    varstore = owner.varstore(spec.extra_dbx)
    firmware = build_firmware(varstore.to_bytes(), "sev-snp" in spec.modes)
    boot = BootChain(EspFiles(chain.files), varstore, plan.gpt_disk(),
                     firmware_settings(firmware.ovmf))
    prediction = predict(boot, BANKS)
    log = boot.run(SoftwarePcrBank(BANKS)).log
    pcrs = {bank: prediction.values(bank) for bank in BANKS}
    if replay(log) != pcrs:
        raise InternalError("the predicted PCRs and the owner's run of the boot disagree")
    clock.lap("prediction")
    out.mkdir(parents=True, exist_ok=True)
    volume_key = rng(VOLUME_KEY_SIZE)
    recovery = base64.b64encode(rng(32))
    kdf = recovery_kdf(spec.kdf_cost, seeded)
    root = root_store({"/etc/hostname": b"cvm\n",
                       "/etc/cvm/workload.json": json.dumps(WORKLOAD).encode(),
                       "/srv/data/README": b"The workload's data lives here, encrypted.\n"})
    disk_path = out / "disk.img"
    write_disk(disk_path, plan, chain.files, root, volume_key, recovery, kdf, rng, epoch)
    clock.lap("disk")
    tpm = OwnerTpm(rng)
    tokens = []
    with FileStorage(disk_path) as disk:
        volume = open_root(disk, plan.layout, rng)  # the seed draws the tokens' keyslots too
        for plan_item in token_plans(spec.chain, spec.sealing):
            public = owner.pcr_policy_public_pem() if plan_item.pubkey_pcrs else None
            tokens.append(tpm.enroll(volume, volume_key, plan_item, pcrs["sha256"], public))
        recovery_slot_kdf = _kdf_json(volume.metadata.keyslots[0].kdf)
    state_key = rng(STATE_KEY_SIZE)
    sealed_state = tpm.sealed_state(state_key)
    wrapped = wrap_state_key(owner.provisioning, state_key, rng)
    clock.lap("vtpm")
    vcpus = vcpu_config(spec.vcpus, spec.vcpu_type)
    launch = tuple(
        LaunchReference(mode, spec.vcpus, spec.vcpu_type, vcpus.signature, mode == "sev-snp",
                        digest)
        for mode in spec.modes
        if (digest := launch_digest(mode, firmware, vcpus)) is not None
    )
    stages = tuple(StageReference(s.name, s.path, _sha256(s.data), s.authenticode_sha256,
                                  s.signer) for s in chain.stages)
    reference = ImageReferenceValues(
        spec.chain, launch, SnpClaims(), pcrs, log.to_bytes(), stages,
        tuple(TokenReference(t.token_id, t.keyslot, t.plan.policy, t.plan.pcrs,
                             t.plan.pubkey_pcrs, t.policy_digest) for t in tokens),
    )
    clock.lap("launch digests")
    host_key = any(m != "sev-snp" for m in spec.modes)
    manifest = _manifest(spec, chain, plan, tokens, disk_path.stat().st_size, host_key,
                         firmware.svsm is not None,
                         {"cost": spec.kdf_cost, "recovery_keyslot": recovery_slot_kdf,
                          "token_keyslot": _kdf_json_spec(TOKEN_KEYSLOT_KDF)})
    files: dict[str, bytes] = {
        "image.json": (json.dumps(manifest, indent=1) + "\n").encode(),
        "reference-values.json": reference.to_bytes(),
        "firmware/OVMF.fd": firmware.ovmf,
        "firmware/OVMF_VARS.fd": firmware.vars,
        "vtpm-state.bin": sealed_state,
    }
    if firmware.svsm is not None:
        files["firmware/SVSM.bin"] = firmware.svsm
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    if host_key:  # the state key in the clear: created 0600, never readable by others
        write_atomically(out / "host-vtpm-state.key", state_key)
    owner_dir = out / "owner"
    owner.save(owner_dir)
    (owner_dir / "vtpm-state-key.wrapped").write_bytes(wrapped)
    # the owner's own copy: what its relying party appraises with (the host may edit the other)
    (owner_dir / OWNER_REFERENCE).write_bytes(files["reference-values.json"])
    write_atomically(owner_dir / "recovery.key", recovery)  # created 0600, never readable
    clock.lap("write")
    return BuiltImage(out, manifest, reference, owner, chain, plan, clock.timings)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _kdf_json_spec(spec: KdfSpec) -> dict[str, Any]:
    return {"type": spec.type, "hash": spec.hash, "iterations": spec.iterations}


def _manifest(spec: ImageSpec, chain: ChainBuild, plan: DiskPlan, tokens: list[Any],
              disk_size: int, host_key: bool, svsm: bool, kdf: dict[str, Any]
              ) -> dict[str, Any]:
    layout = plan.layout
    return {
        "schema": MANIFEST_SCHEMA,
        "cvm_version": __version__,
        "seeded": spec.seed is not None,
        "chain": spec.chain,
        "modes": list(spec.modes),
        "vcpus": spec.vcpus,
        "vcpu_type": spec.vcpu_type,
        "vcpu_signature": f"{vcpu_config(spec.vcpus, spec.vcpu_type).signature:#010x}",
        "seal": spec.sealing,
        "kdf": kdf,
        "stages": [{"name": s.name, "path": s.path, "sha256": _sha256(s.data).hex(),
                    "authenticode_sha256": None if s.authenticode_sha256 is None
                    else s.authenticode_sha256.hex(), "signer": s.signer}
                   for s in chain.stages],
        "disk": {
            "file": "disk.img", "size": disk_size, "disk_guid": str(plan.disk_guid),
            "esp": {"partition": 1, "offset": layout.esp_offset, "size": layout.esp_size,
                    "partition_guid": str(plan.esp_guid)},
            "root": {"partition": 2, "offset": layout.root_offset, "size": layout.root_size,
                     "partition_guid": str(plan.root_guid), "luks_uuid": plan.luks_uuid,
                     "sector_size": 4096, "filesystem": FILESTORE_NAME},
        },
        "tokens": [{"id": t.token_id, "keyslot": t.keyslot, "policy": t.plan.policy,
                    "pcrs": list(t.plan.pcrs), "pubkey_pcrs": list(t.plan.pubkey_pcrs),
                    "bank": "sha256"} for t in tokens],
        "firmware": {"ovmf": "firmware/OVMF.fd", "vars": "firmware/OVMF_VARS.fd",
                     "svsm": "firmware/SVSM.bin" if svsm else None,
                     "crtm_version": CRTM_VERSION,
                     "volumes": [{"base": FOUR_GIB - OVMF_SIZE, "file": "firmware/OVMF.fd"}]},
        "vtpm": {"state": "vtpm-state.bin", "key_source": "broker-released", "counter": 1,
                 "host_state_key": "host-vtpm-state.key" if host_key else None},
    }


FIRST_MANIFEST_KEYS = frozenset({
    "schema", "cvm_version", "chain", "modes", "vcpus", "vcpu_type", "vcpu_signature", "seal",
    "kdf", "stages", "disk", "tokens", "firmware", "vtpm"})
MANIFEST_KEYS = FIRST_MANIFEST_KEYS | {"seeded"}


def manifest_schema(document: object) -> tuple[str, frozenset[str]]:
    """The schema a manifest claims, if it is one cvm reads (``cvm-image/1`` without
    ``seeded``), with its fields; else the current schema's."""
    if isinstance(document, dict) and document.get("schema") == FIRST_MANIFEST_SCHEMA:
        return FIRST_MANIFEST_SCHEMA, FIRST_MANIFEST_KEYS
    return MANIFEST_SCHEMA, MANIFEST_KEYS


def load_manifest(out: Path) -> dict[str, Any]:
    """``OUT/image.json``, checked: schema, keys, chain, modes, stages, disk offsets."""
    path = out / "image.json"
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # any other OS error is the OS's to name
        raise UsageError(f"{out}: not an image bundle (no image.json)") from None
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise FormatError(f"{path}: not JSON") from None
    schema, fields = manifest_schema(document)
    if not isinstance(document, dict) or set(document) != fields:
        raise FormatError(f"{path}: not a {schema} manifest (fields differ)")
    check_schema(document, str(path))
    if not isinstance(document.get("seeded", False), bool):
        raise FormatError(f"{path}: seeded must be true or false")
    if document["chain"] not in CHAINS:
        raise FormatError(f"{path}: chain {document['chain']!r} is not uki or shim-grub")
    modes = document["modes"]
    if not isinstance(modes, list) or not modes or any(m not in MODES for m in modes):
        raise FormatError(f"{path}: modes must be a list of {', '.join(MODES)}")
    for index, stage in enumerate(document["stages"] if isinstance(document["stages"], list)
                                  else [None]):
        if not isinstance(stage, dict) or not {"name", "path", "sha256"} <= set(stage):
            raise FormatError(f"{path}: stages[{index}] is not a stage")
    disk = document["disk"]
    for part in ("esp", "root"):
        entry = disk.get(part) if isinstance(disk, dict) else None
        if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), int) and entry[k] >= 0 for k in ("offset", "size")):
            raise FormatError(f"{path}: disk.{part} needs integer offset and size")
    return document
