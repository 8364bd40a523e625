"""The .modinfo section cvm reads from Debian's kernel modules (the initramfs's module order)
against binutils: objcopy extracts the same bytes from every module sampled, and each module the
initramfs loads lists the dependencies that module's .modinfo names."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.formats.elf import modinfo, section

pytestmark = pytest.mark.interop
Tool = Callable[[str], str]


def _modules(kernel: Path) -> list[Path]:
    found = sorted((kernel.parents[1] / "lib" / "modules").glob("*/kernel/**/*.ko"))
    assert len(found) > 1000  # Debian's kernel package: about four thousand modules
    return found


def test_every_sampled_modules_modinfo_is_the_bytes_objcopy_extracts(
        debian_boot_binaries: dict[str, Path], require_tool: Tool, tmp_path: Path) -> None:
    objcopy = require_tool("objcopy")
    sample = random.Random(9).sample(_modules(debian_boot_binaries["kernel"]), 120)
    for module in sample:
        out = tmp_path / "modinfo.bin"
        subprocess.run([objcopy, "-O", "binary", "--only-section=.modinfo", str(module),
                        str(out)], check=True, capture_output=True)
        ours = section(module.read_bytes(), ".modinfo", str(module))
        assert ours == out.read_bytes(), module
        assert any(key == "depends" for key, _ in modinfo(module.read_bytes(), str(module)))


def test_the_initramfs_modules_name_their_dependencies_as_readelf_prints_them(
        debian_boot_binaries: dict[str, Path], require_tool: Tool) -> None:
    readelf = require_tool("readelf")
    by_name = {m.name: m for m in _modules(debian_boot_binaries["kernel"])}
    for name in ("virtio_blk.ko", "dm-crypt.ko", "virtio_pci.ko"):
        module = by_name[name]
        printed = subprocess.run([readelf, "-p", ".modinfo", str(module)], check=True,
                                 capture_output=True).stdout.decode("utf-8", "replace")
        theirs = [line.split("]", 1)[1].strip() for line in printed.splitlines()
                  if line.strip().startswith("[") and "depends=" in line]
        ours = [f"depends={value}" for key, value in modinfo(module.read_bytes(), name)
                if key == "depends"]
        assert ours == theirs and len(ours) == 1
