"""The images the boot-file and state attacks need: the owner's image per mode group with the
previous release's shim revoked, that previous release (its shim signed by the owner's db key,
its GRUB by the vendor key at an SBAT generation shim no longer accepts), and another owner's
image with other keys. The builds are recorded (a fake ``build_image``) where only what is asked
for matters, and done for real once."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cvm.crypto.x509_edk2 import der
from cvm.errors import UsageError
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.image import PeImage, section_raw_data
from cvm.formats.pe.sbat import SbatSection
from cvm.guest.boot.secureboot import certificate_verifies, signatures_of
from cvm.hardware.vm import Mode
from cvm.image.bundle import ImageSpec
from cvm.image.keys import OwnerKeys
from cvm.scenarios import attack_bundles
from cvm.scenarios.attack_bundles import (
    LabBundles,
    build_lab_bundles,
    groups_built,
    lab_bundle_stages,
)

GRUB_CURRENT_SBAT_LEVEL = 3  # shim's SbatLevel "grub,3": generation 2 is revoked


@dataclass
class Built:
    out: Path
    timings: dict[str, float]


@dataclass
class Call:
    out: Path
    spec: ImageSpec
    keys: OwnerKeys
    random: Any


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    calls: list[Call] = []

    def build_image(out: Path, spec: ImageSpec, keys: OwnerKeys, random: Any) -> Built:
        calls.append(Call(out, spec, keys, random))
        out.mkdir(parents=True)
        return Built(out, {"disk": 1.0 + len(calls), "keys": 0.5})

    monkeypatch.setattr(attack_bundles, "build_image", build_image)
    return calls


def _random() -> Any:
    return random.Random(7).randbytes


def test_every_mode_builds_two_groups_sev_snp_first(tmp_path: Path, builds: list[Call]) -> None:
    rng = _random()
    stages = list(lab_bundle_stages(tmp_path, rng))
    assert [sorted(stage.own) for stage in stages] == [["sev-snp"], ["host-vtpm", "sev-snp"]]
    assert [sorted(stage.foreign) for stage in stages] == [["sev-snp"], ["host-vtpm", "sev-snp"]]
    assert [call.out for call in builds] == [tmp_path / "own-sev-snp",
                                             tmp_path / "foreign-sev-snp",
                                             tmp_path / "own-host-vtpm",
                                             tmp_path / "foreign-host-vtpm"]
    last = stages[-1]
    assert last.own == {"sev-snp": tmp_path / "own-sev-snp",
                        "host-vtpm": tmp_path / "own-host-vtpm"}
    assert last.foreign == {"sev-snp": tmp_path / "foreign-sev-snp",
                            "host-vtpm": tmp_path / "foreign-host-vtpm"}
    assert last.old_release == tmp_path / "old-release"
    assert all(call.random is rng for call in builds)
    # the times of each step, summed over the images built so far
    assert stages[0].timings == {"disk": 2.0 + 3.0, "keys": 1.0}
    assert last.timings == {"disk": 2.0 + 3.0 + 4.0 + 5.0, "keys": 2.0}


def test_each_group_is_built_for_its_modes(tmp_path: Path, builds: list[Call]) -> None:
    build_lab_bundles(tmp_path, _random())
    host_vtpm = ("plain", "sev", "sev-es")
    assert [call.spec.modes for call in builds] == [("sev-snp",), ("sev-snp",), host_vtpm,
                                                    host_vtpm]
    for call in builds:
        assert (call.spec.chain, call.spec.kdf_cost) == ("shim-grub", "fast")
        assert call.spec.sealing == "pcrs"
        call.spec.check()


def test_the_owner_revokes_the_old_shim_and_another_owner_does_not(
    tmp_path: Path, builds: list[Call]
) -> None:
    bundles = build_lab_bundles(tmp_path, _random())
    old_shim = (bundles.old_release / "shimx64.efi").read_bytes()
    own = [call for call in builds if call.out.name.startswith("own-")]
    foreign = [call for call in builds if call.out.name.startswith("foreign-")]
    for call in own:
        assert call.spec.extra_dbx == (image_digest(old_shim),)
    for call in foreign:
        assert call.spec.extra_dbx == ()
    assert own[0].keys is own[1].keys and foreign[0].keys is foreign[1].keys
    assert own[0].keys.db.certificate != foreign[0].keys.db.certificate
    assert own[0].keys.vendor is not None and foreign[0].keys.vendor is not None
    assert own[0].keys.vendor.certificate != foreign[0].keys.vendor.certificate


def _signed_by(image: bytes, certificate: Any) -> bool:
    return any(certificate_verifies(s.signature, s.digest, der(certificate))
               for s in signatures_of(PeImage.parse(image)))


def _sbat(image: bytes) -> SbatSection:
    section = PeImage.parse(image).section(".sbat")
    assert section is not None
    return SbatSection.parse(section_raw_data(section).rstrip(b"\0"))


def test_the_old_release_is_signed_and_revoked_by_its_generation(
    tmp_path: Path, builds: list[Call]
) -> None:
    bundles = build_lab_bundles(tmp_path, _random())
    owner = builds[0].keys
    assert owner.vendor is not None
    old_shim = (bundles.old_release / "shimx64.efi").read_bytes()
    old_grub = (bundles.old_release / "grubx64.efi").read_bytes()
    assert _signed_by(old_shim, owner.db.certificate)
    assert not _signed_by(old_shim, owner.vendor.certificate)
    assert _signed_by(old_grub, owner.vendor.certificate)
    assert not _signed_by(old_grub, owner.db.certificate)
    shim_sbat = _sbat(old_shim)
    assert shim_sbat.generation_of("sbat") == 1 and shim_sbat.generation_of("shim") == 3
    assert [e.component_name for e in shim_sbat.entries] == ["sbat", "shim"]
    assert _sbat(old_grub).generation_of("grub") == GRUB_CURRENT_SBAT_LEVEL - 1
    # the old shim carries the owner's vendor certificate, as the current one does
    assert der(owner.vendor.certificate) in old_shim


@pytest.mark.parametrize("modes, groups", [
    ((Mode.SEV_SNP,), ["sev-snp"]),
    ((Mode.PLAIN,), ["host-vtpm"]),
    ((Mode.SEV, Mode.SEV_ES), ["host-vtpm"]),
])
def test_only_the_groups_the_modes_need_are_built(
    tmp_path: Path, builds: list[Call], modes: tuple[Mode, ...], groups: list[str]
) -> None:
    stages = list(lab_bundle_stages(tmp_path, _random(), modes))
    assert len(stages) == 1 and sorted(stages[0].own) == groups
    assert sorted(stages[0].foreign) == groups
    assert len(builds) == 2
    assert groups_built(stages[0], list(Mode)) == [m for m in Mode
                                                   if ("sev-snp" if m is Mode.SEV_SNP
                                                       else "host-vtpm") in groups]
    assert (stages[0].old_release / "shimx64.efi").is_file()


def test_no_mode_is_refused(tmp_path: Path, builds: list[Call]) -> None:
    with pytest.raises(UsageError, match=r"^no mode to build the lab's images for$"):
        build_lab_bundles(tmp_path, _random(), ())
    assert builds == []


def test_the_old_release_folder_may_exist(tmp_path: Path, builds: list[Call]) -> None:
    (tmp_path / "old-release").mkdir()
    assert build_lab_bundles(tmp_path / "", _random(), (Mode.SEV,)).own
    nested = tmp_path / "a" / "b"
    assert build_lab_bundles(nested, _random(), (Mode.SEV,)).old_release.is_dir()


def test_each_mode_reads_its_group() -> None:
    bundles = LabBundles({"sev-snp": Path("own-snp"), "host-vtpm": Path("own-host")},
                         {"sev-snp": Path("their-snp"), "host-vtpm": Path("their-host")},
                         Path("old"), {})
    assert bundles.own_for(Mode.SEV_SNP) == Path("own-snp")
    assert bundles.foreign_for(Mode.SEV_SNP) == Path("their-snp")
    for mode in (Mode.PLAIN, Mode.SEV, Mode.SEV_ES):
        assert bundles.own_for(mode) == Path("own-host")
        assert bundles.foreign_for(mode) == Path("their-host")
    half = LabBundles({"host-vtpm": Path("own-host")}, {}, Path("old"), {})
    assert groups_built(half, [Mode.SEV_SNP, Mode.SEV, Mode.PLAIN]) == [Mode.SEV, Mode.PLAIN]
    assert groups_built(half, []) == []


def test_a_real_build_revokes_the_old_shim_in_the_owner_varstore(tmp_path: Path) -> None:
    """Built for real (one group): the owner's varstore holds the old shim's digest in dbx, the
    other owner's does not."""
    from cvm.formats.uefi.varstore import Varstore
    from cvm.guest.boot.secureboot import as_database, find_hash
    from cvm.host.vm_run import load_host_image

    bundles = build_lab_bundles(tmp_path, _random(), (Mode.SEV,))
    old_shim = (bundles.old_release / "shimx64.efi").read_bytes()

    def revoked(bundle: Path) -> bool:
        dbx = Varstore.parse(load_host_image(bundle).varstore).get("dbx")
        if dbx is None:
            return False
        return find_hash(as_database(dbx.data), "sha256", image_digest(old_shim)) is not None

    assert revoked(bundles.own_for(Mode.SEV)) and not revoked(bundles.foreign_for(Mode.SEV))
