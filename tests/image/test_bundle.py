"""`cvm image build`: every artifact of the bundle parses back and agrees with the others."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from cvm.disk.storage import FileStorage
from cvm.errors import UsageError
from cvm.formats.initramfs import parse_initramfs
from cvm.formats.ovmf.image import OvmfImage
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.image import PeImage
from cvm.formats.svsm.svsm_image import SvsmImage, svsm_end_gpa
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.replay import replay
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import GptDisk, secure_boot_enabled
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.guest.boot.uki import uki_sections
from cvm.guest.tpm.luks_token import tpm2_tokens
from cvm.image.bundle import BuiltImage, load_manifest
from cvm.image.disk_layout import open_root, read_esp_file
from cvm.image.firmware import firmware_settings
from cvm.image.keys import OwnerKeys
from cvm.image.provisioning import owner_reference, unwrap_state_key
from cvm.image.reference_values import loads
from cvm.vtpm.state import PersistentState
from cvm.vtpm.state_file import MonotonicCounter, ReleasedKeyProvider, open_state

HOST_FILES = ("image.json", "disk.img", "firmware/OVMF.fd", "firmware/OVMF_VARS.fd",
              "firmware/SVSM.bin", "vtpm-state.bin", "reference-values.json")


def _esp_files(built: BuiltImage) -> dict[str, bytes]:
    """The boot files as the firmware would find them, read back from disk.img with mtools."""
    disk = built.out / "disk.img"
    return {stage.path: read_esp_file(disk, built.plan.layout.esp_offset, stage.path)
            for stage in built.chain.stages if stage.path}


def test_every_artifact_parses_back(built: BuiltImage) -> None:
    out = built.out
    manifest = load_manifest(out)
    assert manifest == built.manifest
    assert manifest["chain"] == built.chain.chain
    reference = loads((out / "reference-values.json").read_bytes())
    assert reference == built.reference
    ovmf = OvmfImage.parse((out / "firmware/OVMF.fd").read_bytes())
    vars_bytes = (out / "firmware/OVMF_VARS.fd").read_bytes()
    varstore = Varstore.parse(vars_bytes)
    assert secure_boot_enabled(varstore)
    SvsmImage.parse((out / "firmware/SVSM.bin").read_bytes(),
                    end_gpa=svsm_end_gpa(ovmf, len(vars_bytes)))
    assert replay(EventLog.parse(reference.event_log)) == {
        bank: dict(values) for bank, values in reference.pcrs.items()}
    with FileStorage(out / "disk.img", read_only=True) as disk:
        gpt = GptDisk.from_disk(disk.read(0, 34 * 512))
        assert gpt == built.plan.gpt_disk()
        volume = open_root(disk, built.plan.layout)
        assert volume.uuid == manifest["disk"]["root"]["luks_uuid"]
        tokens = tpm2_tokens(volume)
        assert sorted(tokens) == [t["id"] for t in manifest["tokens"]]
        for entry in manifest["tokens"]:
            token = tokens[entry["id"]]
            assert token.pcrs == tuple(entry["pcrs"])
            assert token.pubkey_pcrs == tuple(entry["pubkey_pcrs"])
            assert token.keyslots == (entry["keyslot"],)
    keys = OwnerKeys.load(out / "owner")
    state_key = unwrap_state_key(keys.provisioning,
                                 (out / "owner/vtpm-state-key.wrapped").read_bytes())
    assert state_key == (out / "host-vtpm-state.key").read_bytes()
    state = open_state((out / "vtpm-state.bin").read_bytes(), ReleasedKeyProvider(state_key),
                       MonotonicCounter(0))
    assert PersistentState.from_bytes(state).seeds


def test_the_esp_holds_the_signed_stages_the_manifest_names(built: BuiltImage) -> None:
    files = _esp_files(built)
    by_path = {stage["path"]: stage for stage in built.manifest["stages"] if stage["path"]}
    assert set(files) == set(by_path)
    for path, data in files.items():
        stage = by_path[path]
        assert hashlib.sha256(data).hexdigest() == stage["sha256"]
        if stage["authenticode_sha256"] is not None:
            image = PeImage.parse(data)
            assert image.certificates, f"{path} is not signed"
            assert image_digest(data, "sha256").hex() == stage["authenticode_sha256"]


def test_the_initramfs_names_the_root(built: BuiltImage) -> None:
    stage = next(s for s in built.chain.stages if s.name == "initramfs")
    archive, manifest = parse_initramfs(stage.data)
    assert manifest.luks_uuid == built.manifest["disk"]["root"]["luks_uuid"]
    assert manifest.partition_guid == built.manifest["disk"]["root"]["partition_guid"]
    assert archive.get("/init") is not None
    if built.chain.chain == "uki":
        loader = next(s for s in built.chain.stages if s.name == "uki").data
        assert dict(uki_sections(loader))[".initrd"] == stage.data
        assert manifest.pcr_signature == "uki:.pcrsig"
    else:
        assert _esp_files(built)["/initrd.img"] == stage.data
        assert manifest.pcr_signature is None


def test_a_boot_of_the_disk_measures_the_predicted_pcrs(built: BuiltImage) -> None:
    """The emulated firmware boots the ESP read back from disk.img; its PCRs are the
    reference values and its log is the reference log, byte for byte."""
    out = built.out
    varstore = Varstore.parse((out / "firmware/OVMF_VARS.fd").read_bytes())
    with FileStorage(out / "disk.img", read_only=True) as disk:
        gpt = GptDisk.from_disk(disk.read(0, 34 * 512))
    chain = BootChain(EspFiles(_esp_files(built)), varstore, gpt,
                      firmware_settings((out / "firmware/OVMF.fd").read_bytes()))
    bank = SoftwarePcrBank(("sha1", "sha256"))
    result = chain.run(bank)
    expected = {"uki": ("firmware", "uki", "linux"),
                "shim-grub": ("firmware", "shim", "grub", "linux")}[built.chain.chain]
    assert result.stages == expected
    for name, values in built.reference.pcrs.items():
        for pcr, value in values.items():
            assert bank.read(pcr, name) == value, (name, pcr)
    assert result.log.to_bytes() == built.reference.event_log


def test_the_manifest_and_reference_values_are_json_a_reader_can_use(
        built: BuiltImage) -> None:
    document = json.loads((built.out / "reference-values.json").read_text())
    assert document["schema"] == "cvm-reference-values" and document["version"] == 1
    assert {e["mode"] for e in document["launch"]} == {"sev", "sev-es", "sev-snp"}
    assert document["not_checked"]
    assert set(document["pcrs"]) == {"sha1", "sha256"}


@pytest.mark.parametrize("name", HOST_FILES)
def test_host_files_exist_and_owner_files_are_private(built: BuiltImage, name: str) -> None:
    assert (built.out / name).is_file()
    for secret in (built.out / "owner").glob("*.key"):
        assert secret.stat().st_mode & 0o077 == 0, secret


def test_the_owner_keeps_its_own_copy_of_the_reference_values(built: BuiltImage) -> None:
    """The copy beside the image goes to the host; the one in owner/ is what the owner's
    relying party appraises with."""
    host_copy = (built.out / "reference-values.json").read_bytes()
    assert (built.out / "owner" / "reference-values.json").read_bytes() == host_copy
    assert owner_reference(built.out, "a test") == built.reference


def test_a_bundle_whose_owner_kept_no_copy_is_refused_by_name(built: BuiltImage,
                                                              tmp_path: Path) -> None:
    owner = tmp_path / "owner"
    owner.mkdir()
    with pytest.raises(UsageError, match=(
            rf"^the relying party needs the owner's {re.escape(str(owner))}/reference-values"
            r"\.json \(a bundle built before the owner kept its own copy: build it again\)$")):
        owner_reference(tmp_path, "the relying party")
