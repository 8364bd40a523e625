"""Attacks on the state the host keeps at rest: the encrypted root, the LUKS2 header and its
token, and the vTPM's state file.

The root is encrypted (LUKS2, AES-XTS) but has no freshness: an older copy of the disk decrypts
as well as the current one. The header's checksum is unkeyed (the host can recompute it) but
the token's sealed object is bound to the vTPM's seeds and to a policy over the predicted PCRs.
The vTPM state file is sealed at rest: under SEV-SNP with a key the relying party releases only
to the attested SVSM, with a rollback counter; in the other modes the vTPM is the host's, and so
is its state key.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from cvm.disk.header_store import load_header, store_header
from cvm.disk.storage import FileStorage, StorageWindow
from cvm.errors import CvmError
from cvm.host.adversary.boot_files import judge_boot, manifest
from cvm.host.adversary.lab import Lab
from cvm.host.adversary.threat import (
    Family,
    Mechanism,
    Observed,
    blocked,
    by,
    declare,
    ok,
    succeeded,
)
from cvm.vtpm.state_file import (
    HEADER_LAYOUT,
    HEADER_SIZE,
    MonotonicCounter,
    ReleasedKeyProvider,
    open_state,
)

STATE = by(Mechanism.STATE_SEALING)
TPM = by(Mechanism.TPM_OBJECT)
NO_FRESHNESS = ok("LUKS2 has no freshness: an older copy decrypts as well as the current one")
HOSTS_VTPM = ok("the vTPM is the host's: so are its state file and its state key")


def _path(bundle: Path, *keys: str) -> Path:
    value = manifest(bundle)
    for key in keys:
        value = value[key]
    return bundle / str(value)


def _root_window(bundle: Path, storage: FileStorage) -> StorageWindow:
    root = manifest(bundle)["disk"]["root"]
    return StorageWindow(storage, int(root["offset"]), int(root["size"]))


def host_state_key(bundle: Path) -> bytes | None:
    """The vTPM state key, when the host holds it (modes without an SVSM)."""
    name = manifest(bundle)["vtpm"].get("host_state_key")
    if not name or not (bundle / str(name)).exists():
        return None
    return (bundle / str(name)).read_bytes()


def rollback_root(lab: Lab) -> Observed:
    disk = lab.bundle() / "disk.img"
    kept = disk.with_name("disk.img.host-copy")
    kept.write_bytes(disk.read_bytes())
    first = lab.boot()
    if not first.workload:
        return judge_boot(first)
    kept.replace(disk)
    second = lab.boot()
    if second.workload:
        return succeeded("the VM booted on the old root without noticing: LUKS2 has no freshness")
    return judge_boot(second)


def swap_disk(lab: Lab) -> Observed:
    ours, theirs = lab.bundle(), lab.foreign_bundle()
    root, other = manifest(ours)["disk"]["root"], manifest(theirs)["disk"]["root"]
    with (theirs / "disk.img").open("rb") as source:
        source.seek(int(other["offset"]))
        data = source.read(min(int(root["size"]), int(other["size"])))
    with FileStorage(ours / "disk.img") as storage:
        window = _root_window(ours, storage)
        window.write(0, data)
        header = load_header(window).header
        relabelled = replace(header, binary=replace(header.binary, uuid=str(root["luks_uuid"])))
        store_header(window, relabelled, (header.binary.salt, header.binary.salt))
    return judge_boot(lab.boot())


def corrupt_luks_header(lab: Lab) -> Observed:
    bundle = lab.bundle()
    with FileStorage(bundle / "disk.img") as storage:
        window = _root_window(bundle, storage)
        header = load_header(window).header
        size = header.binary.hdr_size
        for base in (0, size):
            at = base + 4096 + 2  # inside the JSON text of each copy
            byte = window.read(at, 1)
            window.write(at, bytes([byte[0] ^ 0x20]))
    return judge_boot(lab.boot())


def edit_token(lab: Lab) -> Observed:
    bundle = lab.bundle()
    with FileStorage(bundle / "disk.img") as storage:
        window = _root_window(bundle, storage)
        header = load_header(window).header
        tokens = {}
        for number, token in header.metadata.tokens.items():
            edited = json.loads(json.dumps(token))
            if edited.get("type") == "systemd-tpm2":
                edited["tpm2-pcrs"] = [7]
            tokens[number] = edited
        changed = replace(header, metadata=replace(header.metadata, tokens=tokens))
        salts = (header.binary.salt, load_header(window).header.binary.salt)
        store_header(window, changed, salts)
    return judge_boot(lab.boot())


def read_vtpm_state(lab: Lab) -> Observed:
    bundle = lab.bundle()
    lab.boot()  # the VM runs and its state is stored back; then the host takes the file
    data = _path(bundle, "vtpm", "state").read_bytes()
    key = host_state_key(bundle) or bytes(32)
    try:  # the host is not after freshness: it accepts whatever version the file says
        version = int(HEADER_LAYOUT.unpack(data[:HEADER_SIZE])["counter"])
        state = open_state(data, ReleasedKeyProvider(key), MonotonicCounter(max(version - 1, 0)))
    except CvmError as refused:
        return blocked(Mechanism.STATE_SEALING, f"the state file does not open: {refused}")
    return succeeded(f"the host opened the vTPM state ({len(state)} bytes of seeds and keys)")


def replace_vtpm_state(lab: Lab) -> Observed:
    ours, theirs = lab.bundle(), lab.foreign_bundle()
    shutil.copyfile(_path(theirs, "vtpm", "state"), _path(ours, "vtpm", "state"))
    key = manifest(theirs)["vtpm"].get("host_state_key")
    if key and host_state_key(ours) is not None:
        shutil.copyfile(theirs / key, ours / manifest(ours)["vtpm"]["host_state_key"])
    return judge_boot(lab.boot())


def rollback_vtpm_state(lab: Lab) -> Observed:
    state = _path(lab.bundle(), "vtpm", "state")
    kept = state.read_bytes()
    first = lab.boot()
    if not first.workload:
        return judge_boot(first)
    state.write_bytes(kept)
    return judge_boot(lab.boot())


def move_vtpm_state(lab: Lab) -> Observed:
    firmware = _path(lab.bundle(), "firmware", "ovmf")
    image = bytearray(firmware.read_bytes())
    image[len(image) // 3] ^= 0x01
    firmware.write_bytes(bytes(image))
    return judge_boot(lab.boot())


# -- the declarations: the expected outcome in plain, sev, sev-es and sev-snp -------------------
ATTACKS = (
    declare(
        "rollback-root", Family.STATE,
        "keep a copy of the encrypted root, let the VM run, then hand the old copy back",
        (NO_FRESHNESS,) * 4,
        rollback_root,
    ),
    declare(
        "swap-disk", Family.STATE,
        "attach another owner's encrypted root, relabelled with this VM's LUKS2 UUID",
        (TPM,) * 4,
        swap_disk,
    ),
    declare(
        "corrupt-luks-header", Family.STATE,
        "change a byte of the LUKS2 metadata in both header copies",
        (by(Mechanism.LUKS2_HEADER),) * 4,
        corrupt_luks_header,
    ),
    declare(
        "edit-token", Family.STATE,
        "rewrite the systemd-tpm2 token to bind fewer PCRs (checksums recomputed)",
        (by(Mechanism.PCR_POLICY),) * 4,
        edit_token,
    ),
    declare(
        "read-vtpm-state", Family.STATE,
        "after the VM ran, open its vTPM state file and take the seeds the disk key is "
        "sealed under",
        (HOSTS_VTPM, HOSTS_VTPM, HOSTS_VTPM, STATE),
        read_vtpm_state,
    ),
    declare(
        "replace-vtpm-state", Family.STATE,
        "replace the vTPM state file (and its key, if the host has one) with another VM's",
        (TPM, TPM, TPM, STATE),
        replace_vtpm_state,
    ),
    declare(
        "rollback-vtpm-state", Family.STATE,
        "keep the vTPM state file, let the VM run, then hand the older file back",
        (HOSTS_VTPM, HOSTS_VTPM, HOSTS_VTPM, by(Mechanism.ROLLBACK_COUNTER)),
        rollback_vtpm_state,
    ),
    declare(
        "move-vtpm-state", Family.STATE,
        "run this VM's vTPM state in a VM launched from other firmware (one bit changed)",
        (HOSTS_VTPM, HOSTS_VTPM, HOSTS_VTPM, by(Mechanism.ATTESTATION)),
        move_vtpm_state,
    ),
)
