"""What ``cvm image build OUT`` promises, each test building its own small bundle (the fast
recovery KDF, owner keys made once per module) or calling the build's smaller functions: the
files written and the private ones' modes, what OUT may already be, nothing left behind by a
build that fails, the spec's options reaching the build, and the built image booting."""

from __future__ import annotations

import base64
import datetime
import errno
import hashlib
import json
import os
import random
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from cvm import __version__
from cvm.cli.main import execute
from cvm.crypto.drbg import SeededRandom
from cvm.disk.dm_crypt import CryptDevice
from cvm.disk.file_store import FileStore
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.errors import FormatError, InternalError, UsageError
from cvm.formats.initramfs import PCR_SIGNATURE_IN_UKI, InitramfsManifest, parse_initramfs
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.replay import replay
from cvm.guest.run import boot_bundle
from cvm.image import bundle
from cvm.image import staging as staging_module
from cvm.image.boot_chain import make_kernel
from cvm.image.bundle import (
    BuiltImage,
    ImageSpec,
    build_image,
    default_sealing,
    load_manifest,
    parse_modes,
    recovery_kdf,
)
from cvm.image.disk_layout import open_root, read_esp_file
from cvm.image.firmware import MODES, FirmwareImages, launch_digest, vcpu_config
from cvm.image.keys import OwnerKeys
from cvm.image.provisioning import unwrap_state_key
from cvm.image.reference_values import loads
from cvm.vtpm.state_file import MonotonicCounter, ReleasedKeyProvider, open_state

from .conftest import esp_stamps, folder_files

STEPS = ["keys", "boot chain", "prediction", "disk", "vtpm", "launch digests", "write"]
HOST_FILES = {"image.json", "disk.img", "firmware/OVMF.fd", "firmware/OVMF_VARS.fd",
              "vtpm-state.bin", "reference-values.json"}
OWNER_FILES = {"owner/README", "owner/pk.key", "owner/pk.crt", "owner/kek.key", "owner/kek.crt",
               "owner/db.key", "owner/db.crt", "owner/provisioning.key", "owner/recovery.key",
               "owner/vtpm-state-key.wrapped", "owner/reference-values.json"}
PRIVATE = {"owner/pk.key", "owner/kek.key", "owner/db.key", "owner/provisioning.key",
           "owner/recovery.key", "owner/vendor.key", "owner/pcr-policy.key",
           "host-vtpm-state.key", "disk.img"}
EPOCH = 1_700_000_000  # 2023-11-14 22:13:20 UTC


@pytest.fixture(scope="module")
def owner_keys() -> dict[str, OwnerKeys]:
    """Keys made once: the build's slowest step is not what these tests check."""
    rng = random.Random(41).randbytes
    return {"uki": OwnerKeys.generate(rng, vendor=False, pcr_policy=True),
            "shim-grub": OwnerKeys.generate(rng, vendor=True, pcr_policy=False)}


def _rng(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def _build(out: Path, keys: OwnerKeys, seed: int = 1, **spec: Any) -> BuiltImage:
    return build_image(out, ImageSpec(kdf_cost="fast", **spec), keys, _rng(seed))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _root_files(built: BuiltImage, volume_key: bytes) -> dict[str, bytes]:
    with FileStorage(built.out / "disk.img") as disk:
        volume = open_root(disk, built.plan.layout)
        store = FileStore.open(CryptDevice(volume.storage, volume.segment, volume_key))
        return {name: store.read(name) for name in
                ("/etc/hostname", "/etc/cvm/workload.json", "/srv/data/README")}


# The spec and the smaller functions.

@pytest.mark.parametrize(("spec", "message"), [
    (ImageSpec(chain="grub"), "--chain: 'grub' is not one of uki, shim-grub"),
    (ImageSpec(seal="some"), "--seal: 'some' is not one of pcrs, signed, both"),
    (ImageSpec(chain="shim-grub", seal="signed"),
     "--seal signed|both needs --chain uki (signed PCR policies are PCR 11 of a UKI)"),
    (ImageSpec(chain="shim-grub", seal="both"),
     "--seal signed|both needs --chain uki (signed PCR policies are PCR 11 of a UKI)"),
    (ImageSpec(modes=()), "--mode: give plain, sev, sev-es, sev-snp or all"),
    (ImageSpec(modes=("sev-snp", "tdx")), "--mode: give plain, sev, sev-es, sev-snp or all"),
    (ImageSpec(kdf_cost="cheap"), "--kdf-cost: 'cheap' is not default or fast"),
])
def test_a_spec_is_refused_by_name_before_out_is_touched(tmp_path: Path, spec: ImageSpec,
                                                         message: str) -> None:
    assert MODES == ("plain", "sev", "sev-es", "sev-snp")
    with pytest.raises(UsageError) as refused:
        spec.check()
    assert str(refused.value) == message
    with pytest.raises(UsageError):
        build_image(tmp_path / "new" / "out", spec)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec", [
    ImageSpec(), ImageSpec(chain="shim-grub"), ImageSpec(seal="pcrs"), ImageSpec(seal="both"),
    ImageSpec(chain="shim-grub", seal="pcrs"), ImageSpec(modes=MODES), ImageSpec(modes=("plain",)),
    ImageSpec(kdf_cost="fast")])
def test_every_valid_spec_passes_its_check(spec: ImageSpec) -> None:
    spec.check()


def test_the_seal_defaults_to_the_chains_own() -> None:
    assert default_sealing("uki", None) == "signed"
    assert default_sealing("shim-grub", None) == "pcrs"
    assert default_sealing("uki", "pcrs") == "pcrs"
    assert default_sealing("shim-grub", "both") == "both"
    assert ImageSpec().sealing == "signed"
    assert ImageSpec(chain="shim-grub").sealing == "pcrs"
    assert ImageSpec(seal="both").sealing == "both"


def test_the_recovery_kdf_is_fast_only_when_asked() -> None:
    assert recovery_kdf("fast") == KdfSpec("pbkdf2", iterations=1000, hash="sha256")
    assert recovery_kdf("default") == KdfSpec()
    # a seeded build does not calibrate (the machine's speed would change the header)
    assert recovery_kdf("default", seeded=True) == KdfSpec(iterations=4)
    assert recovery_kdf("default", seeded=False) == KdfSpec()
    assert recovery_kdf("fast", seeded=True) == KdfSpec("pbkdf2", iterations=1000, hash="sha256")
    with pytest.raises(UsageError) as refused:
        recovery_kdf("cheap")
    assert str(refused.value) == "--kdf-cost: 'cheap' is not default or fast"


@pytest.mark.parametrize(("text", "modes"), [
    ("all", MODES), ("sev-snp", ("sev-snp",)), ("sev-snp,plain", ("plain", "sev-snp")),
    (" sev , sev-es ,", ("sev", "sev-es")), ("sev,sev", ("sev",)), ("sev,all", MODES),
    ("all,all", MODES), (" all ,", MODES),
])
def test_modes_are_read_in_canonical_order(text: str, modes: tuple[str, ...]) -> None:
    assert parse_modes(text) == modes


@pytest.mark.parametrize(("text", "message"), [
    ("tdx", "--mode: 'tdx' is not one of plain, sev, sev-es, sev-snp or all"),
    ("tdx,sev,abc", "--mode: 'abc, tdx' is not one of plain, sev, sev-es, sev-snp or all"),
    ("", "--mode: '' is not one of plain, sev, sev-es, sev-snp or all"),
    (" , ", "--mode: ' , ' is not one of plain, sev, sev-es, sev-snp or all"),
    ("ALL", "--mode: 'ALL' is not one of plain, sev, sev-es, sev-snp or all"),
    ("all,tdx", "--mode: 'tdx' is not one of plain, sev, sev-es, sev-snp or all"),
])
def test_unknown_modes_are_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_modes(text)
    assert str(refused.value) == message


def test_the_clock_times_each_step_from_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter([10.0, 10.5, 12.0])
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    clock = bundle._Clock()
    clock.lap("a")
    clock.lap("b")
    assert clock.timings == {"a": 0.5, "b": 1.5}


def test_a_kdfs_description_leaves_out_its_salt() -> None:
    class Kdf:
        def to_json(self) -> dict[str, Any]:
            return {"type": "pbkdf2", "salt": "c2FsdA==", "iterations": 1000}
    assert bundle._kdf_json(Kdf()) == {"type": "pbkdf2", "iterations": 1000}

    class Unsalted:
        def to_json(self) -> dict[str, Any]:
            return {"type": "pbkdf2", "iterations": 1000}
    assert bundle._kdf_json(Unsalted()) == {"type": "pbkdf2", "iterations": 1000}
    assert bundle._kdf_json_spec(KdfSpec("pbkdf2", iterations=7, hash="sha512")) == {
        "type": "pbkdf2", "hash": "sha512", "iterations": 7}


# What a build writes.

def _expected_manifest(built: BuiltImage, spec: ImageSpec, host_key: bool,
                       svsm: bool) -> dict[str, Any]:
    plan, layout = built.plan, built.plan.layout
    return {
        "schema": "cvm-image/2", "cvm_version": __version__, "seeded": spec.seed is not None,
        "chain": spec.chain,
        "modes": list(spec.modes), "vcpus": spec.vcpus, "vcpu_type": spec.vcpu_type,
        "vcpu_signature": "0x" + format(vcpu_config(spec.vcpus, spec.vcpu_type).signature, "08x"),
        "seal": spec.sealing,
        "kdf": {"cost": "fast",
                "recovery_keyslot": {"type": "pbkdf2", "hash": "sha256", "iterations": 1000},
                "token_keyslot": {"type": "pbkdf2", "hash": "sha512", "iterations": 1000}},
        "stages": [{"name": s.name, "path": s.path,
                    "sha256": hashlib.sha256(s.data).hexdigest(),
                    "authenticode_sha256": None if s.authenticode_sha256 is None
                    else s.authenticode_sha256.hex(), "signer": s.signer}
                   for s in built.chain.stages],
        "disk": {
            "file": "disk.img", "size": (built.out / "disk.img").stat().st_size,
            "disk_guid": str(plan.disk_guid),
            "esp": {"partition": 1, "offset": layout.esp_offset, "size": layout.esp_size,
                    "partition_guid": str(plan.esp_guid)},
            "root": {"partition": 2, "offset": layout.root_offset, "size": layout.root_size,
                     "partition_guid": str(plan.root_guid), "luks_uuid": plan.luks_uuid,
                     "sector_size": 4096, "filesystem": "cvm-filestore/2"},
        },
        "tokens": [{"id": t.token, "keyslot": t.keyslot, "policy": t.policy,
                    "pcrs": list(t.pcrs), "pubkey_pcrs": list(t.pubkey_pcrs),
                    "bank": "sha256"} for t in built.reference.sealing],
        "firmware": {"ovmf": "firmware/OVMF.fd", "vars": "firmware/OVMF_VARS.fd",
                     "svsm": "firmware/SVSM.bin" if svsm else None,
                     "crtm_version": "cvm OVMF model 1.0",
                     "volumes": [{"base": 0xFFFC0000, "file": "firmware/OVMF.fd"}]},
        "vtpm": {"state": "vtpm-state.bin", "key_source": "broker-released", "counter": 1,
                 "host_state_key": "host-vtpm-state.key" if host_key else None},
    }


def test_a_uki_bundle_holds_exactly_its_files_and_the_private_ones_are_0600(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a file written readable and narrowed afterwards would stay readable
    monkeypatch.setattr(Path, "chmod", lambda self, mode, **_: None)
    out = tmp_path / "image"
    built = _build(out, owner_keys["uki"])
    files = folder_files(out)
    assert set(files) == HOST_FILES | OWNER_FILES | {
        "firmware/SVSM.bin", "owner/pcr-policy.key", "owner/pcr-policy.pem"}
    assert built.out == out and sorted(p.name for p in tmp_path.iterdir()) == ["image"]
    for name in files:
        if name in PRIVATE:
            assert _mode(out / name) == 0o600, name
    assert _mode(out) == 0o700  # the staging folder's mode: nothing in it is others' to read
    assert list(built.timings) == STEPS and all(t >= 0 for t in built.timings.values())


def test_the_manifest_and_reference_values_describe_what_was_built(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys]) -> None:
    spec = ImageSpec(kdf_cost="fast", seal="both")
    built = build_image(tmp_path / "image", spec, owner_keys["uki"], _rng(2))
    out = built.out
    expected = _expected_manifest(built, spec, host_key=False, svsm=True)
    assert built.manifest == expected and load_manifest(out) == expected
    assert (out / "image.json").read_text() == json.dumps(expected, indent=1) + "\n"
    # the reference values: the host's copy and the owner's, equal
    host_copy = (out / "reference-values.json").read_bytes()
    assert host_copy == built.reference.to_bytes() == (
        out / "owner" / "reference-values.json").read_bytes()
    reference = loads(host_copy)
    assert reference.chain == "uki"
    assert set(reference.pcrs) == {"sha1", "sha256"}
    assert replay(EventLog.parse(reference.event_log)) == reference.pcrs
    assert [(t.policy, t.pcrs, t.pubkey_pcrs) for t in reference.sealing] == [
        ("pcrs", (4, 7, 11), ()), ("signed", (7,), (11,))]
    # each stage as it is on the disk's ESP (the kernel and initramfs inside the UKI)
    assert [(s.name, s.path, s.authenticode_sha256, s.signer) for s in reference.stages] == [
        (s.name, s.path, s.authenticode_sha256, s.signer) for s in built.chain.stages]
    assert [s.signer for s in reference.stages] == ["db", None, None]
    for stage in reference.stages:
        data = next(s.data for s in built.chain.stages if s.name == stage.name)
        assert stage.sha256 == hashlib.sha256(data).digest()
        if stage.path:
            assert read_esp_file(out / "disk.img", built.plan.layout.esp_offset,
                                 stage.path) == data
    (launch,) = reference.launch
    assert (launch.mode, launch.vcpus, launch.vcpu_type, launch.svsm) == (
        "sev-snp", 1, spec.vcpu_type, True)
    assert launch.vcpu_signature == vcpu_config(1, spec.vcpu_type).signature


def test_the_keys_sealed_and_wrapped_open_what_they_should(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys]) -> None:
    built = _build(tmp_path / "image", owner_keys["uki"], modes=("sev", "sev-snp"))
    out = built.out
    state_key = unwrap_state_key(built.keys.provisioning,
                                 (out / "owner" / "vtpm-state-key.wrapped").read_bytes())
    assert (out / "host-vtpm-state.key").read_bytes() == state_key
    assert _mode(out / "host-vtpm-state.key") == 0o600 and _mode(out / "owner") == 0o700
    state = (out / "vtpm-state.bin").read_bytes()
    assert open_state(state, ReleasedKeyProvider(state_key), MonotonicCounter(1))
    with pytest.raises(Exception):  # noqa: B017 - any refusal: the key is not this one
        open_state(state, ReleasedKeyProvider(bytes(len(state_key))), MonotonicCounter(1))
    # the recovery key: 32 random bytes in base64, opening keyslot 0 with the fast KDF
    recovery = (out / "owner" / "recovery.key").read_bytes()
    assert len(base64.b64decode(recovery, validate=True)) == 32
    with FileStorage(out / "disk.img") as disk:
        volume = open_root(disk, built.plan.layout)
        slot, volume_key = volume.unlock_slot(recovery)
        kdf = volume.metadata.keyslots[0].kdf.to_json()
    assert slot == 0 and len(volume_key) == 64
    assert (kdf["type"], kdf["hash"], kdf["iterations"]) == ("pbkdf2", "sha256", 1000)
    assert _root_files(built, volume_key) == {
        "/etc/hostname": b"cvm\n",
        "/etc/cvm/workload.json": b'{"schema": "cvm-workload/1", "data_dir": "/srv/data", '
                                  b'"writes": "/srv/data/log"}',
        "/srv/data/README": b"The workload's data lives here, encrypted.\n"}


def test_modes_decide_the_svsm_the_host_key_and_the_launch_references(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys]) -> None:
    keys = owner_keys["uki"]
    plain = _build(tmp_path / "plain", keys, modes=("plain",))
    assert not (plain.out / "firmware" / "SVSM.bin").exists()
    assert plain.reference.launch == ()
    assert plain.manifest == _expected_manifest(plain, ImageSpec(kdf_cost="fast",
                                                                 modes=("plain",)),
                                                host_key=True, svsm=False)
    spec = ImageSpec(kdf_cost="fast", modes=MODES, vcpus=2, vcpu_type="EPYC-v4")
    every = build_image(tmp_path / "all", spec, keys, _rng(3))
    assert every.manifest == _expected_manifest(every, spec, host_key=True, svsm=True)
    signature = vcpu_config(2, "EPYC-v4").signature
    assert [(r.mode, r.vcpus, r.vcpu_type, r.vcpu_signature, r.svsm)
            for r in every.reference.launch] == [
        ("sev", 2, "EPYC-v4", signature, False), ("sev-es", 2, "EPYC-v4", signature, False),
        ("sev-snp", 2, "EPYC-v4", signature, True)]
    ovmf = (every.out / "firmware" / "OVMF.fd").read_bytes()
    for reference in every.reference.launch:
        firmware = _firmware(every.out)
        assert reference.digest == launch_digest(reference.mode, firmware,
                                                 vcpu_config(2, "EPYC-v4"))
    assert ovmf  # the OVMF image the digests were computed over
    # the sev-snp firmware carries an SVSM and the launch digests of the others differ
    snp_only = _build(tmp_path / "snp", keys, seed=3, modes=("sev-snp",))
    assert (snp_only.out / "firmware" / "SVSM.bin").is_file()
    assert not (snp_only.out / "host-vtpm-state.key").exists()


def _firmware(out: Path) -> FirmwareImages:
    svsm = out / "firmware" / "SVSM.bin"
    return FirmwareImages((out / "firmware" / "OVMF.fd").read_bytes(),
                    (out / "firmware" / "OVMF_VARS.fd").read_bytes(),
                    svsm.read_bytes() if svsm.exists() else None)


def test_the_chain_and_the_seal_reach_the_build(tmp_path: Path,
                                                owner_keys: dict[str, OwnerKeys]) -> None:
    grub = _build(tmp_path / "grub", owner_keys["shim-grub"], chain="shim-grub")
    assert [s.name for s in grub.chain.stages][:2] == ["shim", "grub"]
    assert grub.manifest["chain"] == grub.reference.chain == "shim-grub"
    assert [(t.policy, t.pcrs, t.pubkey_pcrs) for t in grub.reference.sealing] == [
        ("pcrs", (4, 7, 8, 9), ())]
    assert (grub.out / "owner" / "vendor.key").is_file()
    uki = _build(tmp_path / "uki", owner_keys["uki"], seal="pcrs")
    assert uki.chain.stages[0].name == "uki"
    assert [(t.policy, t.pcrs, t.pubkey_pcrs) for t in uki.reference.sealing] == [
        ("pcrs", (4, 7, 11), ())]
    signed = _build(tmp_path / "signed", owner_keys["uki"])
    assert [(t.policy, t.pcrs, t.pubkey_pcrs) for t in signed.reference.sealing] == [
        ("signed", (7,), (11,))]


@pytest.mark.parametrize(("chain", "seal", "signature"), [
    ("uki", None, PCR_SIGNATURE_IN_UKI), ("uki", "both", PCR_SIGNATURE_IN_UKI),
    ("uki", "pcrs", None), ("shim-grub", None, None)])
def test_the_initramfs_and_the_command_line_name_the_root_and_the_signature(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys], chain: str, seal: str | None,
        signature: str | None) -> None:
    built = _build(tmp_path / "image", owner_keys[chain], chain=chain, seal=seal)
    plan = built.plan
    initrd = next(s.data for s in built.chain.stages if s.name == "initramfs")
    assert parse_initramfs(initrd)[1] == InitramfsManifest(plan.luks_uuid, str(plan.root_guid),
                                                           signature)
    cmdline = f"root=/dev/mapper/root rd.luks.uuid={plan.luks_uuid} ro".encode()
    booted = built.chain.stages[0 if chain == "uki" else 2].data  # the UKI, or grub.cfg
    assert cmdline in booted
    if chain == "uki":  # the signed policy travels in the UKI only when a token needs it
        assert (b".pcrsig" in booted) is (signature is not None)


def test_the_extra_dbx_and_the_kernel_reach_the_build(tmp_path: Path,
                                                      owner_keys: dict[str, OwnerKeys]) -> None:
    keys = owner_keys["uki"]
    revoked = hashlib.sha256(b"some other loader").digest()
    kernel = make_kernel("6.1.0-test")
    built = _build(tmp_path / "image", keys, extra_dbx=(revoked,), kernel=kernel)
    assert (built.out / "firmware" / "OVMF_VARS.fd").read_bytes() == \
        keys.varstore((revoked,)).to_bytes()
    assert keys.varstore((revoked,)).to_bytes() != keys.varstore(()).to_bytes()
    stage = next(s for s in built.chain.stages if s.name == "kernel")
    assert stage.data == kernel


def test_keys_are_made_for_the_chain_and_the_seal_when_none_are_given(tmp_path: Path) -> None:
    uki = build_image(tmp_path / "a", ImageSpec(kdf_cost="fast", seed=5))
    assert uki.keys.pcr_policy is not None and uki.keys.vendor is None
    assert uki.keys.provisioning == SeededRandom(b"5", b"cvm image")(32)  # the seed's first draw
    grub = build_image(tmp_path / "b", ImageSpec(kdf_cost="fast", chain="shim-grub"))
    assert grub.keys.vendor is not None and grub.keys.pcr_policy is None
    assert (grub.out / "owner" / "vendor.key").is_file()
    assert not (grub.out / "owner" / "pcr-policy.key").exists()


def test_a_seed_makes_the_build_reproducible_and_a_given_random_wins(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys]) -> None:
    keys = owner_keys["uki"]
    first = build_image(tmp_path / "a", ImageSpec(kdf_cost="fast", seed=5), keys)
    again = build_image(tmp_path / "b", ImageSpec(kdf_cost="fast", seed=5), keys)
    assert folder_files(first.out) == folder_files(again.out)  # the ESP's time stamps included
    other = build_image(tmp_path / "c", ImageSpec(kdf_cost="fast", seed=6), keys)
    assert other.plan.luks_uuid != first.plan.luks_uuid
    # without a seed, the system's random: two builds differ
    unseeded = build_image(tmp_path / "d", ImageSpec(kdf_cost="fast"), keys)
    unseeded_again = build_image(tmp_path / "e", ImageSpec(kdf_cost="fast"), keys)
    assert unseeded.plan.luks_uuid != unseeded_again.plan.luks_uuid
    # a random given wins over the seed
    given = build_image(tmp_path / "f", ImageSpec(kdf_cost="fast", seed=5), keys, _rng(9))
    given_again = build_image(tmp_path / "g", ImageSpec(kdf_cost="fast", seed=6), keys, _rng(9))
    assert given.plan == given_again.plan and given.plan != first.plan


# What OUT may already be.

def test_a_new_folder_and_its_parents_are_made(tmp_path: Path,
                                               owner_keys: dict[str, OwnerKeys]) -> None:
    out = tmp_path / "new" / "deeper" / "image"
    _build(out, owner_keys["uki"])
    assert (out / "image.json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["image"]


def test_an_empty_folder_is_built_in(tmp_path: Path, owner_keys: dict[str, OwnerKeys]) -> None:
    out = tmp_path / "image"
    out.mkdir()
    _build(out, owner_keys["uki"])
    assert (out / "image.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image"]


def test_an_earlier_bundle_is_replaced_whole(tmp_path: Path,
                                             owner_keys: dict[str, OwnerKeys]) -> None:
    out = tmp_path / "image"
    _build(out, owner_keys["uki"], modes=("plain", "sev-snp"))
    (out / "notes.txt").write_text("kept with the earlier bundle\n")
    built = _build(out, owner_keys["shim-grub"], seed=2, chain="shim-grub")
    assert set(folder_files(out)) == set(folder_files(built.out))
    assert not (out / "notes.txt").exists() and not (out / "host-vtpm-state.key").exists()
    assert load_manifest(out)["chain"] == "shim-grub"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image"]


@pytest.mark.parametrize("occupant", ["file", "other files", "image.json a folder",
                                      "image.json a link"])
def test_anything_else_is_refused_in_one_line_and_left_intact(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys], occupant: str) -> None:
    out = tmp_path / "image"
    if occupant == "file":
        out.write_text("mine\n")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
        if occupant == "image.json a folder":
            (out / "image.json").mkdir()
        elif occupant == "image.json a link":
            (out / "image.json").symlink_to(tmp_path / "nowhere")
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    with pytest.raises(UsageError) as refused:
        _build(out, owner_keys["uki"])
    assert str(refused.value) == (f"{out}: holds files that are not an image bundle; give a "
                                  "new or empty folder")
    assert {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")} == before


# A build that fails leaves nothing behind.

@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("earlier", [False, True])
def test_a_build_that_fails_removes_its_staging_folder(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys], monkeypatch: pytest.MonkeyPatch,
        error: BaseException, earlier: bool) -> None:
    out = tmp_path / "image"
    if earlier:
        _build(out, owner_keys["uki"])
    before = folder_files(out) if earlier else None

    def broken(*args: object) -> bytes:
        raise error
    monkeypatch.setattr(bundle, "wrap_state_key", broken)  # after the disk is written
    with pytest.raises(type(error)):
        _build(out, owner_keys["uki"], seed=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["image"] if earlier else [])
    if earlier:
        assert folder_files(out) == before


def test_the_bundle_is_built_in_a_hidden_folder_beside_out(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    staged: list[Path] = []
    real_put_in_place = staging_module.put_in_place

    def recording(staging: Path, out: Path) -> None:
        staged.append(staging)
        assert (staging / "image.json").is_file() and not out.exists()
        real_put_in_place(staging, out)
    monkeypatch.setattr(staging_module, "put_in_place", recording)
    _build(tmp_path / "image", owner_keys["uki"])
    (staging,) = staged
    assert staging.parent == tmp_path and staging.name.startswith(".image.building-")


def test_a_failure_to_remove_the_staging_folder_does_not_hide_the_builds_error(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    def broken(*args: object) -> bytes:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(bundle, "wrap_state_key", broken)
    _refuse_unlink(monkeypatch, "disk.img")
    with pytest.raises(OSError, match="No space left on device"):
        _build(tmp_path / "image", owner_keys["uki"])
    assert not (tmp_path / "image").exists()


def test_a_prediction_the_run_does_not_confirm_stops_the_build(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    monkeypatch.setattr(bundle, "replay", lambda log: {"sha1": {}, "sha256": {}})
    with pytest.raises(InternalError) as refused:
        _build(tmp_path / "image", owner_keys["uki"])
    assert str(refused.value) == "the predicted PCRs and the owner's run of the boot disagree"
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_puts_the_earlier_bundle_back(tmp_path: Path) -> None:
    out = tmp_path / "image"
    out.mkdir()
    (out / "image.json").write_text("{}\n")
    with pytest.raises(FileNotFoundError):
        staging_module.put_in_place(tmp_path / "missing", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image"]
    assert (out / "image.json").read_text() == "{}\n"


def test_a_complete_bundle_is_renamed_over_the_earlier_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, staging = tmp_path / "image", tmp_path / ".image.building-x"
    out.mkdir()
    (out / "old").write_text("old\n")
    staging.mkdir()
    (staging / "new").write_text("new\n")
    removed: list[Path] = []
    real_rmtree = shutil.rmtree

    def recording_rmtree(path: Path, ignore_errors: bool = False) -> None:
        removed.append(Path(path))
        assert (Path(path) / "bundle" / "old").read_text() == "old\n"
        real_rmtree(path, ignore_errors=ignore_errors)
    monkeypatch.setattr(shutil, "rmtree", recording_rmtree)
    staging_module.put_in_place(staging, out)
    # the earlier bundle was moved aside into a hidden folder beside OUT, then removed
    (aside,) = removed
    assert aside.parent == tmp_path and aside.name.startswith(".image.old-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image"]
    assert [p.name for p in out.iterdir()] == ["new"]
    fresh = tmp_path / "fresh"
    staging.mkdir()
    staging_module.put_in_place(staging, fresh)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "image"]


def test_an_earlier_bundle_that_cannot_be_removed_whole_does_not_fail_the_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, staging = tmp_path / "image", tmp_path / ".image.building-x"
    out.mkdir()
    (out / "stuck").write_text("old\n")
    staging.mkdir()
    (staging / "new").write_text("new\n")
    _refuse_unlink(monkeypatch, "stuck")
    staging_module.put_in_place(staging, out)  # the new bundle is in place: no error
    assert [p.name for p in out.iterdir()] == ["new"]


# The manifest's reader.

def _manifest_document() -> dict[str, Any]:
    return {"schema": "cvm-image/2", "cvm_version": "0", "seeded": False, "chain": "uki",
            "modes": ["sev-snp"],
            "vcpus": 1, "vcpu_type": "EPYC-Milan", "vcpu_signature": "0x00a00f11",
            "seal": "signed", "kdf": {}, "stages": [{"name": "uki", "path": "/x",
                                                    "sha256": "00"}],
            "disk": {"esp": {"offset": 0, "size": 0}, "root": {"offset": 1, "size": 2}},
            "tokens": [], "firmware": {}, "vtpm": {}}


def _write(folder: Path, document: object) -> Path:
    (folder / "image.json").write_text(json.dumps(document))
    return folder


def test_a_well_formed_manifest_is_read_back(tmp_path: Path) -> None:
    document = _manifest_document()
    assert load_manifest(_write(tmp_path, document)) == document
    for chain in ("uki", "shim-grub"):
        assert load_manifest(_write(tmp_path, {**document, "chain": chain}))["chain"] == chain
    assert load_manifest(_write(tmp_path, {**document, "modes": list(MODES)}))
    assert load_manifest(_write(tmp_path, {**document, "stages": []}))
    assert load_manifest(_write(tmp_path, {**document, "seeded": True}))["seeded"] is True


def test_a_first_schema_manifest_without_seeded_is_still_read(tmp_path: Path) -> None:
    document = {**_manifest_document(), "schema": "cvm-image/1"}
    del document["seeded"]
    assert load_manifest(_write(tmp_path, document)) == document
    for bad, schema in (({**document, "seeded": False}, "cvm-image/1"),
                        ({**document, "schema": "cvm-image/2"}, "cvm-image/2")):
        with pytest.raises(FormatError) as refused:
            load_manifest(_write(tmp_path, bad))
        assert str(refused.value) == (f"{tmp_path / 'image.json'}: not a {schema} manifest "
                                      "(fields differ)")


@pytest.mark.parametrize(("change", "message"), [
    ({"schema": "cvm-image/3"}, "schema 'cvm-image/3', expected cvm-image/2 (or cvm-image/1)"),
    ({"schema": ["cvm-image/1"]},
     "schema ['cvm-image/1'], expected cvm-image/2 (or cvm-image/1)"),
    ({"extra": 1}, "not a cvm-image/2 manifest (fields differ)"),
    ({"seeded": 1}, "seeded must be true or false"),
    ({"seeded": None}, "seeded must be true or false"),
    ({"seeded": "false"}, "seeded must be true or false"),
    ({"chain": "grub"}, "chain 'grub' is not uki or shim-grub"),
    ({"modes": []}, "modes must be a list of plain, sev, sev-es, sev-snp"),
    ({"modes": "sev-snp"}, "modes must be a list of plain, sev, sev-es, sev-snp"),
    ({"modes": ["sev-snp", "tdx"]}, "modes must be a list of plain, sev, sev-es, sev-snp"),
    ({"stages": {"name": "uki"}}, "stages[0] is not a stage"),
    ({"stages": {}}, "stages[0] is not a stage"),
    ({"stages": ""}, "stages[0] is not a stage"),
    ({"stages": 3}, "stages[0] is not a stage"),
    ({"stages": [{"name": "uki", "path": "/x", "sha256": "00"}, {"name": "uki", "path": "/x"}]},
     "stages[1] is not a stage"),
    ({"stages": [{"name": "uki", "sha256": "00"}]}, "stages[0] is not a stage"),
    ({"stages": [{"path": "/x", "sha256": "00"}]}, "stages[0] is not a stage"),
    ({"stages": ["uki"]}, "stages[0] is not a stage"),
    ({"disk": []}, "disk.esp needs integer offset and size"),
    ({"disk": {"root": {"offset": 1, "size": 2}}}, "disk.esp needs integer offset and size"),
    ({"disk": {"esp": {"offset": 0, "size": 0}, "root": {"offset": 1}}},
     "disk.root needs integer offset and size"),
    ({"disk": {"esp": {"offset": 0, "size": 0}, "root": {"offset": -1, "size": 2}}},
     "disk.root needs integer offset and size"),
    ({"disk": {"esp": {"offset": 0, "size": "0"}, "root": {"offset": 1, "size": 2}}},
     "disk.esp needs integer offset and size"),
    ({"disk": {"esp": {"offset": 0, "size": -1}, "root": {"offset": 1, "size": 2}}},
     "disk.esp needs integer offset and size"),
    ({"disk": {"esp": [], "root": {"offset": 1, "size": 2}}},
     "disk.esp needs integer offset and size"),
])
def test_a_malformed_manifest_is_refused_by_field(tmp_path: Path, change: dict[str, Any],
                                                  message: str) -> None:
    with pytest.raises(FormatError) as refused:
        load_manifest(_write(tmp_path, {**_manifest_document(), **change}))
    assert str(refused.value) == f"{tmp_path / 'image.json'}: {message}"


def test_a_manifest_missing_a_field_or_not_an_object_is_refused(tmp_path: Path) -> None:
    document = _manifest_document()
    del document["vtpm"]
    for bad in (document, ["schema"], "cvm-image/2"):
        with pytest.raises(FormatError) as refused:
            load_manifest(_write(tmp_path, bad))
        assert str(refused.value) == (f"{tmp_path / 'image.json'}: not a cvm-image/2 manifest "
                                      "(fields differ)")


def test_a_manifest_that_is_not_json_or_cannot_be_read_is_refused(tmp_path: Path) -> None:
    for folder in (tmp_path, tmp_path / "none"):
        with pytest.raises(UsageError) as missing:
            load_manifest(folder)
        assert str(missing.value) == f"{folder}: not an image bundle (no image.json)"
    (tmp_path / "file").write_bytes(b"{}")
    with pytest.raises(UsageError) as missing:
        load_manifest(tmp_path / "file")
    assert str(missing.value) == f"{tmp_path / 'file'}: not an image bundle (no image.json)"
    (tmp_path / "image.json").mkdir()
    with pytest.raises(IsADirectoryError) as unreadable:  # the OS's error: exit 74, its reason
        load_manifest(tmp_path)
    assert unreadable.value.filename == str(tmp_path / "image.json")
    (tmp_path / "image.json").rmdir()
    for data in (b"{", b"\xff\xfe{"):
        (tmp_path / "image.json").write_bytes(data)
        with pytest.raises(FormatError) as refused:
            load_manifest(tmp_path)
        assert str(refused.value) == f"{tmp_path / 'image.json'}: not JSON"


# The built image boots.

@pytest.mark.parametrize(("chain", "seal", "mode"), [
    ("uki", None, "sev-snp"), ("uki", "pcrs", "sev"), ("shim-grub", None, "sev-snp")])
def test_the_built_image_boots_and_unseals_its_root(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys], chain: str, seal: str | None,
        mode: str) -> None:
    built = _build(tmp_path / "image", owner_keys[chain], chain=chain, seal=seal,
                   modes=(mode,), vcpus=2)
    trace = boot_bundle(built.out, mode, vcpus=2, random=_rng(7))
    assert trace.refused is None and trace.launch_accepted is True
    assert trace.pcrs_match and trace.unsealed and trace.workload_ok and trace.ok


def _refuse_unlink(monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """``os.unlink`` refuses (EPERM) every path ending in ``suffix``, removes the others."""
    real_unlink = os.unlink

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if os.fspath(path).endswith(suffix):
            raise PermissionError(1, "Operation not permitted", os.fspath(path))
        real_unlink(path, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", unlink)


def test_a_bundle_that_cannot_be_created_is_named_as_given(
        tmp_path: Path, owner_keys: dict[str, OwnerKeys], capsys: pytest.CaptureFixture[str]
        ) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a folder")
    for out, reason, code in ((blocker / "image", "File exists", errno.EEXIST),
                              (blocker / "deeper" / "image", "Not a directory", errno.ENOTDIR)):
        with pytest.raises(OSError) as refused:
            _build(out, owner_keys["uki"])
        assert (refused.value.filename, refused.value.errno) == (str(out), code)
        assert refused.value.strerror == f"cannot create the bundle ({reason})"
    assert execute(["image", "build", str(blocker / "image"), "--kdf-cost", "fast"]) == 74
    assert capsys.readouterr().err == ("cvm: error: cannot create the bundle (File "
                                       f"exists): {blocker / 'image'}\n")
    assert blocker.read_bytes() == b"not a folder"


# The seed and the build's time, without the seconds a seeded key derivation takes.

@pytest.fixture
def generated(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The owner's keys generated as the build asks, but from the system (the seeded derivation
    has its own tests in test_keys_checks.py and test_seeded_build.py); each call's arguments."""
    calls: list[dict[str, Any]] = []
    real = OwnerKeys.generate

    def generate(random: Any, **options: Any) -> OwnerKeys:
        calls.append({"random": random, **options})
        return real(random, **{**options, "seeded": False})
    monkeypatch.setattr(bundle.OwnerKeys, "generate", generate)
    return calls


@pytest.mark.parametrize(("chain", "seal", "vendor", "pcr_policy"), [
    ("uki", None, False, True), ("uki", "both", False, True), ("uki", "pcrs", False, False),
    ("shim-grub", None, True, False)])
def test_the_keys_generated_are_the_builds_for_its_chain_seal_and_time(
        tmp_path: Path, generated: list[dict[str, Any]], owner_keys: dict[str, OwnerKeys],
        chain: str, seal: str | None, vendor: bool, pcr_policy: bool) -> None:
    given = _rng(4)
    db = owner_keys["uki"].db
    cases = ((None, None, None, None), (5, None, 1735689600, None), (None, EPOCH, EPOCH, db),
             (5, EPOCH, EPOCH, db))
    for seed, epoch, dated, kept in cases:
        out = tmp_path / f"image-{seed}-{epoch}"
        built = build_image(out, ImageSpec(chain=chain, seal=seal, kdf_cost="fast", seed=seed,
                                           source_date_epoch=epoch), random=given, db=kept)
        assert generated.pop() == {
            "random": given, "vendor": vendor, "pcr_policy": pcr_policy, "db": kept,
            "seeded": seed is not None,
            "not_before": None if dated is None else
            datetime.datetime.fromtimestamp(dated, datetime.UTC)}
        assert built.manifest["seeded"] is (seed is not None)
        if dated is not None:  # the ESP's entries: the build's time, not the clock
            stamp = "2025-01-01 0:00" if epoch is None else "2023-11-14 22:13"
            assert esp_stamps(f"{out / 'disk.img'}@@{built.plan.layout.esp_offset}") == {stamp}
        assert folder_files(out)["owner/db.crt"] == (
            built.keys.db.certificate.public_bytes(Encoding.PEM))


@pytest.mark.parametrize(("cost", "seed"), [("default", None), ("default", 5), ("fast", 5)])
def test_the_recovery_keyslot_gets_the_kdf_of_the_cost_and_the_seed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner_keys: dict[str, OwnerKeys],
        cost: str, seed: int | None) -> None:
    """Which KDF is ``recovery_kdf``'s to say (tested above); the build must ask it with the
    spec's cost and whether it is seeded — and use its answer (here a cheap stand-in, as
    cryptsetup's argon2id takes a GiB and seconds)."""
    asked: list[tuple[str, bool]] = []
    stand_in = KdfSpec("pbkdf2", iterations=1001, hash="sha256")

    def kdf(chosen: str, seeded: bool = False) -> KdfSpec:
        asked.append((chosen, seeded))
        return stand_in
    monkeypatch.setattr(bundle, "recovery_kdf", kdf)
    built = build_image(tmp_path / "image", ImageSpec(kdf_cost=cost, seed=seed),
                        owner_keys["uki"], _rng(1))
    assert asked == [(cost, seed is not None)]
    assert built.manifest["kdf"]["recovery_keyslot"] == {
        "type": "pbkdf2", "hash": "sha256", "iterations": 1001}
    with FileStorage(built.out / "disk.img") as disk:
        slot_kdf = open_root(disk, built.plan.layout).metadata.keyslots[0].kdf.to_json()
    assert (slot_kdf["type"], slot_kdf["iterations"]) == ("pbkdf2", 1001)
