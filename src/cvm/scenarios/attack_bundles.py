"""The images the boot-file and state attacks need, built once per run by their owners.

- ``own``: the owner's image (``--chain shim-grub``, token sealed to PCR 4+7+8+9), built twice
  with the same keys: for ``sev-snp`` (the vTPM state key only ever released to the attested
  SVSM) and for ``plain``/``sev``/``sev-es`` (the host's vTPM, so the host holds the state key).
  The owner revoked the previous release's shim: its Authenticode hash is in dbx.
- ``old_release``: what the host kept of that previous release — its shim (owner-signed, now in
  dbx) and its GRUB (vendor-signed, SBAT generation 2, below shim's SbatLevel ``grub,3``).
- ``foreign``: another owner's image with its own keys, vTPM and disk, on the same host.

Each is built with :func:`cvm.image.bundle.build_image` exactly as ``cvm image build`` does
(the cheap recovery-keyslot KDF, ``--kdf-cost fast``, to keep a full matrix within its time).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cvm.crypto.x509_edk2 import der
from cvm.errors import UsageError
from cvm.formats.pe.authenticode import image_digest
from cvm.hardware.vm import Mode
from cvm.image.boot_chain import SBAT_HEADER, make_grub, make_shim
from cvm.image.bundle import ImageSpec, build_image
from cvm.image.keys import OwnerKeys

RandomBytes = Callable[[int], bytes]
OLD_SHIM_SBAT = SBAT_HEADER + "shim,3,UEFI shim,shim,1,https://github.com/rhboot/shim\n"
OLD_GRUB_GENERATION = 2
CHAIN = "shim-grub"


SNP_MODES = ("sev-snp",)
HOST_VTPM_MODES = ("plain", "sev", "sev-es")


@dataclass(frozen=True)
class LabBundles:
    """Where the lab's images are: bundles per mode group (``sev-snp``; the others), and
    ``old_release`` holding ``shimx64.efi`` and ``grubx64.efi``."""

    own: dict[str, Path]
    foreign: dict[str, Path]
    old_release: Path
    timings: dict[str, float]

    def own_for(self, mode: Mode) -> Path:
        return self.own[_group(mode)]

    def foreign_for(self, mode: Mode) -> Path:
        return self.foreign[_group(mode)]


def _group(mode: Mode) -> str:
    return "sev-snp" if mode is Mode.SEV_SNP else "host-vtpm"


def _spec(modes: tuple[str, ...], extra_dbx: tuple[bytes, ...] = ()) -> ImageSpec:
    return ImageSpec(chain=CHAIN, modes=modes, kdf_cost="fast", extra_dbx=extra_dbx)


def build_lab_bundles(workdir: Path, random_bytes: RandomBytes = os.urandom,
                      modes: Iterable[Mode] = tuple(Mode)) -> LabBundles:
    """Build the owner's image (with last release revoked), its old release, another owner's —
    for the mode groups ``modes`` need."""
    stages = list(lab_bundle_stages(workdir, random_bytes, modes))
    if not stages:
        raise UsageError("no mode to build the lab's images for")
    return stages[-1]


def lab_bundle_stages(workdir: Path, random_bytes: RandomBytes = os.urandom,
                      modes: Iterable[Mode] = tuple(Mode)) -> Iterator[LabBundles]:
    """:func:`build_lab_bundles` one mode group at a time (``sev-snp`` first): the bundles
    built so far after each group, so that a runner can start on them while the next builds."""
    groups = {_group(mode) for mode in modes}
    keys = OwnerKeys.generate(random_bytes)
    assert keys.vendor is not None
    old = workdir / "old-release"
    old.mkdir(parents=True, exist_ok=True)
    old_shim = keys.sign_db(make_shim(der(keys.vendor.certificate), OLD_SHIM_SBAT))
    old_grub = keys.sign_vendor(make_grub(sbat_generation=OLD_GRUB_GENERATION))
    (old / "shimx64.efi").write_bytes(old_shim)
    (old / "grubx64.efi").write_bytes(old_grub)
    revoked = (image_digest(old_shim),)
    other = OwnerKeys.generate(random_bytes)
    own: dict[str, Path] = {}
    foreign: dict[str, Path] = {}
    timings: dict[str, float] = {}
    for group, names in (("sev-snp", SNP_MODES), ("host-vtpm", HOST_VTPM_MODES)):
        if group not in groups:
            continue
        mine = build_image(workdir / f"own-{group}", _spec(names, revoked), keys, random_bytes)
        theirs = build_image(workdir / f"foreign-{group}", _spec(names), other, random_bytes)
        own[group], foreign[group] = mine.out, theirs.out
        for image in (mine, theirs):
            for step, seconds in image.timings.items():
                timings[step] = timings.get(step, 0.0) + seconds
        yield LabBundles(dict(own), dict(foreign), old, dict(timings))


def groups_built(bundles: LabBundles, modes: Iterable[Mode]) -> list[Mode]:
    """The modes of ``modes`` whose images ``bundles`` holds."""
    return [mode for mode in modes if _group(mode) in bundles.own]
