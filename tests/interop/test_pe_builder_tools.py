"""The builder's images as binutils' objdump reads them, and as sbsign/sbverify sign and verify
them: every header field objdump prints against the value the PE format asks for, the sections
(long names resolved through the string table) where the layout puts them."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate, pem, private_key_pem
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.guest.boot.secureboot import as_database, verify_image

pytestmark = pytest.mark.interop
Tool = Callable[[str], str]

SECTIONS = [SectionSpec(".sbat", b"sbat,1\n"), SectionSpec(".vendor_cert", b"v" * 5000),
            SectionSpec(".text", b"\xc3" * 700, CODE), SectionSpec(".bss", b""),
            SectionSpec(".data", b"d" * 0x1000)]


def _objdump(require_tool: Tool, path: Path) -> tuple[str, dict[str, str], list[list[str]]]:
    """The file format, the ``objdump -p`` header fields and the ``objdump -h`` section rows
    (name, size, VMA, LMA, file offset, alignment, flags)."""
    done = subprocess.run([require_tool("objdump"), "-p", "-h", str(path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    form = re.search(r"file format (\S+)", done.stdout)
    assert form is not None
    fields = dict(re.findall(r"^(\w+)\s+(\S+)", done.stdout.split("The Data Directory")[0],
                             re.MULTILINE))
    rows = re.findall(r"^\s+\d+ (\S+)\s+(\w+)\s+(\w+)\s+(\w+)\s+(\w+)\s+(\S+)\n\s+(.*)$",
                      done.stdout.split("Sections:")[1], re.MULTILINE)
    return form.group(1), fields, [list(row) for row in rows]


def test_objdump_reads_the_pe32_plus_headers(require_tool: Tool, tmp_path: Path) -> None:
    path = tmp_path / "mixed.efi"
    path.write_bytes(build_pe(SECTIONS, timestamp=0x5F5E100))
    form, fields, rows = _objdump(require_tool, path)
    assert form == "pei-x86-64"
    assert fields["Characteristics"] == "0x22"  # executable, large address aware
    assert fields["Magic"] == "020b"
    assert int(fields["AddressOfEntryPoint"], 16) == 0x4000  # .text, after 1 + 2 pages of data
    assert int(fields["BaseOfCode"], 16) == 0x4000
    assert int(fields["SizeOfCode"], 16) == 0x400
    assert int(fields["SizeOfInitializedData"], 16) == 0x200 + 0x1400 + 0x1000
    assert int(fields["SizeOfUninitializedData"], 16) == 0
    assert int(fields["ImageBase"], 16) == 0
    assert (fields["SectionAlignment"], fields["FileAlignment"]) == ("00001000", "00000200")
    assert int(fields["SizeOfImage"], 16) == 0x7000
    assert int(fields["SizeOfHeaders"], 16) == 0x400  # five section headers pass 0x200
    assert int(fields["CheckSum"], 16) == 0
    assert fields["Subsystem"] == "0000000a"
    assert int(fields["DllCharacteristics"], 16) == 0x100  # NX_COMPAT alone
    assert int(fields["NumberOfRvaAndSizes"], 16) == 16
    assert int(fields["Win32Version"], 16) == int(fields["LoaderFlags"], 16) == 0
    for name in ("SizeOfStackReserve", "SizeOfStackCommit", "SizeOfHeapReserve",
                 "SizeOfHeapCommit"):
        assert int(fields[name], 16) == 0
    assert [row[0] for row in rows] == [".sbat", ".vendor_cert", ".text", ".bss", ".data"]
    assert [int(row[1], 16) for row in rows] == [7, 5000, 700, 0, 0x1000]
    assert [int(row[2], 16) for row in rows] == [0x1000, 0x2000, 0x4000, 0x5000, 0x6000]
    assert [int(row[4], 16) for row in rows] == [0x400, 0x600, 0x1A00, 0, 0x1E00]
    assert ["CODE" in row[6] for row in rows] == [False, False, True, False, False]
    assert ["CONTENTS" in row[6] for row in rows] == [True, True, True, False, True]


def test_objdump_reads_the_pe32_headers(require_tool: Tool, tmp_path: Path) -> None:
    path = tmp_path / "ia32.efi"
    path.write_bytes(build_pe([SectionSpec(".text", b"\xc3" * 50, CODE),
                               SectionSpec(".data", b"d" * 10)], pe32=True))
    form, fields, rows = _objdump(require_tool, path)
    assert form == "pei-i386"
    assert fields["Characteristics"] == "0x102"  # executable, 32 bit words
    assert fields["Magic"] == "010b"
    assert int(fields["AddressOfEntryPoint"], 16) == int(fields["BaseOfCode"], 16) == 0x1000
    assert int(fields["BaseOfData"], 16) == 0x2000
    assert int(fields["SizeOfImage"], 16) == 0x3000
    assert [(row[0], int(row[2], 16)) for row in rows] == [(".text", 0x1000), (".data", 0x2000)]


def test_objdump_reads_a_long_section_table(require_tool: Tool, tmp_path: Path) -> None:
    """A hundred sections: the headers pass the first page, and the sections start after."""
    path = tmp_path / "many.efi"
    path.write_bytes(build_pe([SectionSpec(f".section{i}", bytes([i])) for i in range(100)]))
    _, fields, rows = _objdump(require_tool, path)
    assert int(fields["SizeOfHeaders"], 16) == 0x1200
    assert [row[0] for row in rows] == [f".section{i}" for i in range(100)]
    assert int(rows[0][2], 16) == 0x2000
    assert int(fields["SizeOfImage"], 16) == 0x2000 + 100 * 0x1000


def test_sbsign_and_sbverify_take_the_built_image(require_tool: Tool, tmp_path: Path) -> None:
    key = generate_rsa_key()
    cert = issue_certificate("cvm builder test", key, ca=False)
    (tmp_path / "key.pem").write_bytes(private_key_pem(key))
    (tmp_path / "cert.pem").write_bytes(pem(cert))
    (tmp_path / "app.efi").write_bytes(build_pe(SECTIONS))
    signed = tmp_path / "app.signed.efi"
    done = subprocess.run([require_tool("sbsign"), "--key", str(tmp_path / "key.pem"),
                           "--cert", str(tmp_path / "cert.pem"), "--output", str(signed),
                           str(tmp_path / "app.efi")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    verified = subprocess.run([require_tool("sbverify"), "--cert", str(tmp_path / "cert.pem"),
                               str(signed)], capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
    assert verify_image(signed.read_bytes(), as_database([der(cert)])).allowed
