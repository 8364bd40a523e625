"""The GRUB core image: embedded config, prefix and memdisk, from synthetic and Debian's GRUB."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.errors import FormatError
from cvm.formats.grub.core_image import GrubCoreImage
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe


def test_parse_reads_config_and_prefix(make_grub: Callable[[str, str], bytes]) -> None:
    core = GrubCoreImage.parse(make_grub("configfile /grub.cfg", "/EFI/cvm"))
    assert core == GrubCoreImage("configfile /grub.cfg", "/EFI/cvm", b"")
    assert core.memdisk_file("grub.cfg") is None


@pytest.mark.parametrize(
    ("mods", "message"),
    [(None, "no 'mods' section"), (b"MIMG" + bytes(20), "magic"),
     (bytes.fromhex("6d696d67") + bytes(4) + (24).to_bytes(8, "little")
      + (0x1000).to_bytes(8, "little"), "past the 'mods' section")],
)
def test_malformed_module_info_is_a_format_error(mods: bytes | None, message: str) -> None:
    sections = [SectionSpec(".text", b"\xc3" * 64, CODE)]
    if mods is not None:
        sections.append(SectionSpec("mods", mods))
    with pytest.raises(FormatError, match=message):
        GrubCoreImage.parse(build_pe(sections))


@pytest.mark.interop
def test_debian_embedded_configuration(debian_boot_binaries: dict[str, Path]) -> None:
    core = GrubCoreImage.parse(debian_boot_binaries["grub"].read_bytes())
    assert core.prefix == "/EFI/debian"
    assert core.config.strip() == "normal (memdisk)/grub.cfg"
    memdisk_cfg = core.memdisk_file("grub.cfg")
    assert memdisk_cfg is not None
    assert memdisk_cfg.startswith(b'if [ -z "$prefix" -o ! -e "$prefix" ]; then')
    assert core.memdisk_file("GRUB.CFG") == memdisk_cfg
    assert core.memdisk_file("missing.cfg") is None
    assert core.memdisk_file("fonts") is None
