"""systemd-stub's PCR 11: our UKI measurements equal ``systemd-measure calculate``'s values."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cvm.errors import FormatError
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.guest.boot.uki import UKI_PCR, extend_phase, uki_sections

SECTIONS = {
    ".linux": b"\x4d\x5a not really a kernel" * 50,
    ".osrel": b'ID=cvm\nPRETTY_NAME="cvm test"\n',
    ".cmdline": b"console=ttyS0 root=/dev/vda2\0",
    ".initrd": b"070701" + bytes(300),
}
PHASES = ("enter-initrd", "leave-initrd", "sysinit", "ready")


def _systemd_measure() -> str:
    path = Path("/usr/lib/systemd/systemd-measure")
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail("systemd-measure (package systemd) is missing in CI")
        pytest.skip("systemd-measure is not installed")
    return str(path)


@pytest.mark.interop
@pytest.mark.parametrize("bank", ["sha1", "sha256"])
def test_pcr11_matches_systemd_measure(tmp_path: Path, bank: str) -> None:
    tool = _systemd_measure()
    arguments = []
    for name, data in SECTIONS.items():
        path = tmp_path / name.lstrip(".")
        path.write_bytes(data)
        arguments.append(f"--{name.lstrip('.')}={path}")
    run = subprocess.run([tool, "calculate", *arguments, f"--bank={bank}", "--json=short"],
                         capture_output=True, text=True, check=True)
    expected = [entry["hash"] for entry in json.loads(run.stdout)[bank]]
    uki = build_pe([SectionSpec(".text", b"\xc3", CODE),
                    *(SectionSpec(n, d) for n, d in SECTIONS.items())])
    pcrs = SoftwarePcrBank((bank,))
    result = BootChain(EspFiles({"/EFI/BOOT/BOOTX64.EFI": uki}), Varstore.empty_4m()).run(pcrs)
    assert result.request.cmdline == "console=ttyS0 root=/dev/vda2"
    got = []
    for phase in PHASES:
        extend_phase(pcrs, phase)
        got.append(pcrs.read(UKI_PCR, bank).hex())
    assert got == expected


def test_a_uki_needs_a_linux_section() -> None:
    image = build_pe([SectionSpec(".text", b"\xc3", CODE), SectionSpec(".osrel", b"ID=x\n")])
    with pytest.raises(FormatError, match=r"\.linux"):
        uki_sections(image)
