"""Sections appended by cvm against the same sections added by binutils' objcopy (the way a UKI
was made before ukify): objdump must read the same section table — names, sizes, addresses,
flags — and the same SizeOfInitializedData and SizeOfImage from both."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.interop.test_pe_builder_tools import _objdump

from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.image import PeImage
from cvm.formats.pe.section_append import append_sections

pytestmark = pytest.mark.interop
Tool = Callable[[str], str]

PARTS = [(".osrel", b"ID=cvm\n"), (".cmdline", b"console=ttyS0 quiet"), (".linux", b"K" * 9000)]


@pytest.mark.parametrize("pe32", [False, True])
def test_objcopy_lays_out_the_same_sections(require_tool: Tool, tmp_path: Path,
                                            pe32: bool) -> None:
    stub = build_pe([SectionSpec(".text", b"\xc3" * 300, CODE)], pe32=pe32)
    (tmp_path / "stub.efi").write_bytes(stub)
    ours = append_sections(stub, PARTS)
    (tmp_path / "ours.efi").write_bytes(ours)
    command = [require_tool("objcopy")]
    for section, (name, contents) in zip(PeImage.parse(ours).sections[1:], PARTS, strict=True):
        (tmp_path / name[1:]).write_bytes(contents)
        command += ["--add-section", f"{name}={tmp_path / name[1:]}",
                    "--change-section-vma", f"{name}={section.virtual_address:#x}",
                    "--set-section-flags", f"{name}=data,readonly"]
    done = subprocess.run([*command, str(tmp_path / "stub.efi"), str(tmp_path / "theirs.efi")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    _, our_fields, our_rows = _objdump(require_tool, tmp_path / "ours.efi")
    _, their_fields, their_rows = _objdump(require_tool, tmp_path / "theirs.efi")
    for field in ("SizeOfInitializedData", "SizeOfImage", "SizeOfCode"):
        assert int(our_fields[field], 16) == int(their_fields[field], 16), field
    # name, size, VMA, flags; the file offsets differ (objcopy moves the data behind larger
    # headers of its own)
    assert [(r[0], r[1], r[2], r[6]) for r in our_rows] == [
        (r[0], r[1], r[2], r[6]) for r in their_rows]
    assert [r[0] for r in our_rows] == [".text", *(name for name, _ in PARTS)]
