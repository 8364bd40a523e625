"""The attacks on the state the host keeps at rest, one cell at a time: each outcome as
expected, and the proof that the attack acted — the files the VM booted from, as the host left
them before each boot (a disk rolled back, a header relabelled, a token edited, a state file
and key replaced), and the refusal that stopped it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.disk.header_store import load_header
from cvm.disk.storage import FileStorage, StorageWindow
from cvm.formats.luks2.header_copy import HeaderCopy
from cvm.hardware.vm import Mode
from cvm.host.adversary import state
from cvm.host.adversary.boot_files import manifest
from cvm.host.adversary.catalog import by_name
from cvm.host.adversary.lab import BootReport
from cvm.host.adversary.threat import MODES, Attack, Mechanism, Observed, Verdict
from cvm.scenarios.boot_lab import BootLab

Labs = Callable[[Mode], BootLab]
Files = dict[str, bytes]


LAB_SEED = 50  # the lab bundles' and the VMs' randomness (tests/adversary/conftest.py)


def _files(bundle: Path) -> Files:
    """The host's files a boot reads: the disk, the vTPM state and key, the firmware."""
    document = manifest(bundle)
    names = {"disk": "disk.img", "state": document["vtpm"]["state"],
             "firmware": document["firmware"]["ovmf"],
             "key": document["vtpm"].get("host_state_key")}
    return {what: (bundle / str(name)).read_bytes() for what, name in names.items()
            if name and (bundle / str(name)).exists()}


def _watch_boots(lab: BootLab) -> list[Files]:
    """Record the host's files as each later boot of ``lab`` finds them."""
    seen: list[Files] = []
    boot = lab.boot

    def watched() -> BootReport:
        seen.append(_files(lab.bundle()))
        return boot()

    lab.boot = watched  # type: ignore[method-assign]
    return seen


def _perform(lab: BootLab, name: str) -> tuple[Observed, list[Files]]:
    before = _files(lab.bundle())
    seen = _watch_boots(lab)
    attack = by_name(name)
    observed = attack.perform(lab)
    assert observed.matches(attack.expected(lab.mode)), (name, str(observed), observed.detail)
    return observed, [before, *seen]


def _root(bundle: Path, disk: bytes) -> bytes:
    root = manifest(bundle)["disk"]["root"]
    return disk[int(root["offset"]):int(root["offset"]) + int(root["size"])]


def _header_of(bundle: Path, disk: bytes, tmp_path: Path) -> HeaderCopy:
    image = tmp_path / "root.img"
    image.write_bytes(_root(bundle, disk))
    with FileStorage(image) as storage:
        return load_header(StorageWindow(storage, 0, image.stat().st_size)).header


@pytest.mark.parametrize("mode", MODES, ids=[m.value for m in MODES])
@pytest.mark.parametrize("attack", state.ATTACKS, ids=[a.name for a in state.ATTACKS])
def test_each_state_attack_as_expected(attack: Attack, mode: Mode, labs: Labs) -> None:
    lab = labs(mode)
    observed = attack.perform(lab)
    assert observed.matches(attack.expected(mode)), (str(observed), observed.detail)


def test_rollback_root_boots_the_second_time_from_the_first_boots_disk(labs: Labs) -> None:
    for mode in (Mode.PLAIN, Mode.SEV_SNP):
        lab = labs(mode)
        observed, (before, first, second) = _perform(lab, "rollback-root")
        assert observed.detail == ("the VM booted on the old root without noticing: LUKS2 has "
                                   "no freshness")
        assert first["disk"] == before["disk"] == second["disk"]
        assert _files(lab.bundle())["disk"] != before["disk"]  # each boot writes the root
        assert not (lab.bundle() / "disk.img.host-copy").exists()


def test_swap_disk_boots_the_foreign_root_under_this_vms_uuid(labs: Labs,
                                                              tmp_path: Path) -> None:
    lab = labs(Mode.SEV_ES)
    ours, theirs = lab.bundle(), lab.foreign_bundle()
    observed, (before, at_boot) = _perform(lab, "swap-disk")
    assert "TPM_RC_INTEGRITY" in observed.detail
    header = _header_of(ours, at_boot["disk"], tmp_path)
    foreign = _header_of(theirs, _files(theirs)["disk"], tmp_path)
    original = _header_of(ours, before["disk"], tmp_path)
    assert header.binary.uuid == manifest(ours)["disk"]["root"]["luks_uuid"]
    assert header.binary.uuid != foreign.binary.uuid
    assert header.metadata == foreign.metadata != original.metadata
    data = 16 << 20  # the data segment, after LUKS2's default 16 MiB of header and keyslots
    foreign_root = _root(theirs, _files(theirs)["disk"])
    ours_at_boot = _root(ours, at_boot["disk"])
    assert ours_at_boot[data:] == foreign_root[data:len(ours_at_boot)]
    assert ours_at_boot[data:] != _root(ours, before["disk"])[data:]


def test_corrupt_luks_header_breaks_both_copies_of_the_json(labs: Labs) -> None:
    lab = labs(Mode.PLAIN)
    observed, (before, at_boot) = _perform(lab, "corrupt-luks-header")
    assert "primary header is invalid" in observed.detail
    assert "secondary header is invalid" in observed.detail
    old, new = _root(lab.bundle(), before["disk"]), _root(lab.bundle(), at_boot["disk"])
    changed = [at for at in range(len(old)) if old[at] != new[at]] if len(old) < 1 << 26 else []
    size = int.from_bytes(old[8:16], "big")
    assert changed == [4096 + 2, size + 4096 + 2]
    assert all(old[at] ^ new[at] == 0x20 for at in changed)


def test_edit_token_binds_fewer_pcrs(labs: Labs, tmp_path: Path) -> None:
    lab = labs(Mode.SEV_SNP)
    observed, (before, at_boot) = _perform(lab, "edit-token")
    assert "the PCRs differ from the sealed policy" in observed.detail
    old = _header_of(lab.bundle(), before["disk"], tmp_path).metadata.tokens
    new = _header_of(lab.bundle(), at_boot["disk"], tmp_path).metadata.tokens
    assert old.keys() == new.keys()
    for number, token in old.items():
        edited = new[number]
        assert edited["type"] == token["type"] == "systemd-tpm2"
        assert edited["tpm2-pcrs"] == [7] and set(token["tpm2-pcrs"]) > {7}
        assert {k: v for k, v in edited.items() if k != "tpm2-pcrs"} == {
            k: v for k, v in token.items() if k != "tpm2-pcrs"}


def test_read_vtpm_state_opens_the_hosts_state_outside_snp(labs: Labs) -> None:
    lab = labs(Mode.SEV_ES)
    key = state.host_state_key(lab.bundle())
    assert key is not None and len(key) == 32
    observed, _ = _perform(lab, "read-vtpm-state")
    assert observed.detail.startswith("the host opened the vTPM state (")
    snp = labs(Mode.SEV_SNP)
    assert state.host_state_key(snp.bundle()) is None
    observed, _ = _perform(snp, "read-vtpm-state")
    assert "does not authenticate" in observed.detail


def test_replace_vtpm_state_boots_the_other_vms_state_and_key(labs: Labs) -> None:
    for mode in (Mode.SEV, Mode.SEV_SNP):
        lab = labs(mode)
        theirs = _files(lab.foreign_bundle())
        observed, (before, at_boot) = _perform(lab, "replace-vtpm-state")
        assert at_boot["state"] == theirs["state"] != before["state"]
        if mode is Mode.SEV:
            assert at_boot["key"] == theirs["key"] != before["key"]
            assert "TPM_RC_INTEGRITY" in observed.detail
        else:
            assert "key" not in at_boot
            assert observed.mechanism is Mechanism.STATE_SEALING


def test_rollback_vtpm_state_hands_back_the_file_the_first_boot_started_from(
    labs: Labs,
) -> None:
    for mode in (Mode.PLAIN, Mode.SEV_SNP):
        lab = labs(mode)
        observed, (before, first, second) = _perform(lab, "rollback-vtpm-state")
        assert first["state"] == before["state"] == second["state"]
        assert _files(lab.bundle())["state"] != before["state"] or mode is Mode.SEV_SNP
        if mode is Mode.SEV_SNP:
            assert "old copy (rollback)" in observed.detail
        else:
            assert observed.verdict is Verdict.SUCCEEDED


def test_move_vtpm_state_flips_one_bit_of_the_firmware(labs: Labs) -> None:
    for mode in (Mode.SEV, Mode.SEV_SNP):
        lab = labs(mode)
        observed, (before, at_boot) = _perform(lab, "move-vtpm-state")
        old, new = before["firmware"], at_boot["firmware"]
        changed = [at for at in range(len(old)) if old[at] != new[at]]
        assert changed == [len(old) // 3] and old[changed[0]] ^ new[changed[0]] == 1
        assert at_boot["state"] == before["state"]
        if mode is Mode.SEV_SNP:
            assert "measurement differs" in observed.detail


def test_the_host_state_key_is_the_bundles_file(labs: Labs) -> None:
    lab = labs(Mode.PLAIN)
    bundle = lab.bundle()
    name = manifest(bundle)["vtpm"]["host_state_key"]
    assert state.host_state_key(bundle) == (bundle / name).read_bytes()
    (bundle / name).unlink()
    assert state.host_state_key(bundle) is None


@pytest.mark.parametrize(("name", "failing"), [
    ("rollback-root", 0), ("rollback-root", 1),
    ("rollback-vtpm-state", 0), ("rollback-vtpm-state", 1),
])
def test_a_rollback_whose_boot_fails_reports_that_boot(name: str, failing: int,
                                                      labs: Labs) -> None:
    """A boot that fails for a reason no mechanism explains (the first, before anything was
    handed back, or the second) is what the cell reports: blocked by nothing it can name."""
    lab = labs(Mode.PLAIN)
    genuine = lab.boot
    boots: list[int] = []

    def boot() -> BootReport:
        boots.append(len(boots))
        if boots[-1] == failing:
            return BootReport(False, False, False, "launch", "out of memory")
        return genuine()

    lab.boot = boot  # type: ignore[method-assign]
    observed = by_name(name).perform(lab)
    assert boots == list(range(failing + 1))
    assert observed.verdict is Verdict.BLOCKED and observed.mechanism is None
    assert "out of memory" in observed.detail
