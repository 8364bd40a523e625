"""Image bundles built once per session: both chains, every mode, the fast recovery KDF; and
the inputs of a ``--target qemu`` build (Debian's packages from the tests' cache, a swtpm's
SRK)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.disk.esp import run_tool
from cvm.image.bundle import BuiltImage, ImageSpec, build_image
from cvm.image.debian_packages import BUSYBOX, STUB, BootInputs, fetch
from cvm.image.firmware import MODES


@pytest.fixture(scope="session")
def built_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltImage]:
    """``{"uki": ..., "shim-grub": ...}``; the UKI seals with both a PCR and a signed token."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        "uki": build_image(root / "uki", ImageSpec(chain="uki", seal="both", modes=MODES,
                                                   kdf_cost="fast", seed=1)),
        "shim-grub": build_image(root / "shim-grub", ImageSpec(
            chain="shim-grub", modes=MODES, kdf_cost="fast", seed=2)),
    }


@pytest.fixture(params=["uki", "shim-grub"])
def built(request: pytest.FixtureRequest, built_images: dict[str, BuiltImage]) -> BuiltImage:
    """Each chain in turn."""
    return built_images[str(request.param)]


def bundle_file(built: BuiltImage, name: str) -> Path:
    return built.out / name


@pytest.fixture(scope="session")
def boot_inputs(debian_boot_binaries: dict[str, Path],
                debian_package: Callable[[str, str], Path]) -> BootInputs:
    """A ``--target qemu`` build's inputs, from the tests' Debian package cache."""
    kernel = debian_boot_binaries["kernel"]
    return BootInputs(
        debian_boot_binaries["shim"].read_bytes(), debian_boot_binaries["grub"].read_bytes(),
        kernel.read_bytes(), fetch(kernel.parents[2], kernel.parents[1].name.removeprefix("x-")),
        (debian_package(BUSYBOX[0], "1:1.35.0-4+deb12u1+b1") / BUSYBOX[1]).read_bytes(),
        (debian_package(STUB[0], "252.39-1~deb12u2") / STUB[1]).read_bytes(),
    )


@pytest.fixture(scope="session")
def srk(tmp_path_factory: pytest.TempPathFactory, require_tool: Callable[[str], str]) -> Path:
    """A new swtpm's storage root key (``cvm vm tpm-setup``), a TPM2B_PUBLIC file."""
    for tool in ("swtpm", "swtpm_setup", "tpm2_createprimary", "tpm2_readpublic"):
        require_tool(tool)
    state = tmp_path_factory.mktemp("tpm") / "state"
    assert execute(["vm", "tpm-setup", str(state)]) == 0
    return state / "srk.pub"


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def esp_stamps(esp: str) -> set[str]:
    """The date and time of every entry of the ESP at ``esp`` (mtools' ``IMAGE@@OFFSET``), as
    mdir prints them (FAT's local time)."""
    listing = run_tool("mdir", "-i", esp, "-/", "::/")
    return {f"{day} {time}" for day, time in
            re.findall(r"(\d{4}-\d{2}-\d{2}) +(\d{1,2}:\d{2})", listing)}
