"""newc cpio (as GNU ``cpio -H newc`` writes it), cvm's initramfs manifest, systemd's .pcrsig."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.cpio import CpioArchive, CpioEntry
from cvm.formats.initramfs import InitramfsManifest, build_initramfs, parse_initramfs
from cvm.formats.pcr_signature import (
    PcrSignatureEntry,
    parse_pcr_signature,
    pcr_signature_bytes,
)

LUKS = "0b6f1a48-7b3e-4d6c-9a11-3c5e2f8d9a01"
PART = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)


def test_the_layout_of_one_member() -> None:
    data = CpioArchive((CpioEntry.file("a", b"xyz", ino=7),)).to_bytes()
    assert data[:6] == b"070701"
    assert data[6:14] == b"00000007" and data[14:22] == b"000081A4"
    assert data[54:62] == b"00000003" and data[94:102] == b"00000002"
    assert data[110:112] == b"a\0" and data[112:115] == b"xyz" and data[115] == 0
    assert data.endswith(b"TRAILER!!!\0\0\0\0")


@given(st.lists(st.tuples(names, st.binary(max_size=40)), max_size=6, unique_by=lambda t: t[0]))
def test_round_trip(members: list[tuple[str, bytes]]) -> None:
    members = [m for m in members if m[0] != "TRAILER!!!"]
    archive = CpioArchive(tuple(CpioEntry.file(n, d, ino=i) for i, (n, d) in enumerate(members)))
    data = archive.to_bytes()
    assert CpioArchive.parse(data) == archive
    assert CpioArchive.parse(data + bytes(512)).to_bytes() == data


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        CpioArchive.parse(data)


@pytest.mark.parametrize(("offset", "value"), [
    (0, b"9"),            # magic
    (14, b"G"),           # a field that is not hex
    (110 + 1, b"!"),      # the name's NUL
    (115, b"\x01"),       # data padding
])
def test_corruption_is_refused(offset: int, value: bytes) -> None:
    data = bytearray(CpioArchive((CpioEntry.file("a", b"xyz"),)).to_bytes())
    data[offset : offset + 1] = value
    with pytest.raises(FormatError):
        CpioArchive.parse(bytes(data))


def test_no_trailer_and_trailing_data_are_refused() -> None:
    data = CpioArchive((CpioEntry.file("a", b"xyz"),)).to_bytes()
    with pytest.raises(FormatError, match="trailer"):
        CpioArchive.parse(data[:128])
    with pytest.raises(FormatError, match="after the trailer"):
        CpioArchive.parse(data + b"junk")
    with pytest.raises(FormatError):
        CpioArchive((CpioEntry.file("a", b""), CpioEntry.file("a", b""))).to_bytes()


@pytest.mark.interop
def test_gnu_cpio_writes_what_cvm_writes(tmp_path: Path,
                                         require_tool: Callable[[str], str]) -> None:
    tool = require_tool("cpio")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "a").write_bytes(b"hi\n")
    (tmp_path / "b").write_bytes(b"x")
    made = subprocess.run([tool, "-o", "-H", "newc", "--quiet"], input=b"etc\netc/a\nb\n",
                          cwd=tmp_path, capture_output=True, check=True).stdout
    archive = CpioArchive.parse(made)
    assert [e.name for e in archive.entries] == ["etc", "etc/a", "b"]
    member = archive.get("/etc/a")
    assert member is not None and member.data == b"hi\n"
    ours = archive.to_bytes()
    assert made[: len(ours)] == ours and not any(made[len(ours):])


def test_initramfs_manifest_round_trip_and_refusals() -> None:
    manifest = InitramfsManifest(LUKS, PART, "uki:.pcrsig")
    archive, parsed = parse_initramfs(build_initramfs(manifest, "ID=cvm\n"))
    assert parsed == manifest and archive.get("init") is not None
    document = manifest.to_json()
    for mutate in (
        lambda d: d.update(schema="other"),
        lambda d: d["root"].update(luks_uuid="not-a-uuid"),
        lambda d: d["root"].update(token_type="clevis"),
        lambda d: d.update(pcr_signature="/tmp/sig.json"),
        lambda d: d["workload"].pop("data_dir"),
        lambda d: d.update(extra=1),
    ):
        broken = json.loads(json.dumps(document))
        mutate(broken)
        with pytest.raises(FormatError):
            InitramfsManifest.from_json(broken)
    with pytest.raises(FormatError, match=r"initramfs\.json"):
        parse_initramfs(CpioArchive((CpioEntry.file("init", b""),)).to_bytes())


def test_the_manifest_names_the_file_store_the_build_writes_and_accepts_version_1() -> None:
    from cvm.disk.file_store import FILESTORE_NAME

    manifest = InitramfsManifest(LUKS, PART)
    document = manifest.to_json()
    assert document["root"]["filesystem"] == document["workload"]["store"] == FILESTORE_NAME
    old = json.loads(json.dumps(document))
    old["root"]["filesystem"] = old["workload"]["store"] = "cvm-filestore/1"
    parsed = InitramfsManifest.from_json(old)
    assert parsed.filesystem == "cvm-filestore/1" and parsed.to_json() == old
    for root, store in (("cvm-filestore/1", FILESTORE_NAME), (FILESTORE_NAME, "cvm-filestore/1"),
                        ("cvm-filestore/3", "cvm-filestore/3")):
        broken = json.loads(json.dumps(document))
        broken["root"]["filesystem"], broken["workload"]["store"] = root, store
        with pytest.raises(FormatError, match=r"filesystem|workload\.store"):
            InitramfsManifest.from_json(broken)


def test_pcr_signature_round_trip_and_refusals() -> None:
    entry = PcrSignatureEntry("sha256", (11,), bytes(32), bytes(range(32)), b"sig")
    data = pcr_signature_bytes((entry,))
    assert parse_pcr_signature(data) == (entry,)
    assert json.loads(data)["sha256"][0]["pol"] == bytes(range(32)).hex()
    for bad in (b"[]", b"{}", b'{"md5": []}', b'{"sha256": [{"pcrs": [11]}]}',
                data.replace(b'"pcrs":[11]', b'"pcrs":[24]'),
                data.replace(bytes(range(32)).hex().encode(), b"00")):
        with pytest.raises(FormatError):
            parse_pcr_signature(bad)


def _member_header(**fields: int) -> bytes:
    order = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
             "rdevmajor", "rdevminor", "namesize", "check")
    return b"070701" + b"".join(f"{fields.get(k, 0):08x}".encode() for k in order)


def test_every_field_round_trips_and_lower_case_hex_is_read() -> None:
    entry = CpioEntry("dev/x", 0o100600, b"", 9, 1, 2, 1, 3, 8, 1, 4, 5)
    data = CpioArchive((entry,)).to_bytes()
    assert CpioArchive.parse(data).entries == (entry,)
    lower = _member_header(ino=0xAB, mode=0o100644, nlink=1, namesize=2) + b"a\0"
    trailer = _member_header(nlink=1, namesize=11) + b"TRAILER!!!\0"
    parsed = CpioArchive.parse(lower + trailer + bytes(-len(lower + trailer) % 4))
    assert parsed.entries[0].ino == 0xAB


def test_directory_members_and_field_limits() -> None:
    directory = CpioEntry.directory("etc", ino=3)
    header = CpioArchive((directory,)).to_bytes()[:110]
    assert header[6:14] == b"00000003" and header[14:22] == b"000041ED"
    assert header[38:46] == b"00000002" and header[54:62] == b"00000000"
    CpioArchive((CpioEntry.file("a", b"", ino=0xFFFFFFFF),)).to_bytes()
    with pytest.raises(FormatError, match="ino"):
        CpioArchive((CpioEntry.file("a", b"", ino=1 << 32),)).to_bytes()


@pytest.mark.parametrize("name", ["", "a\0b", "a\0"])
def test_bad_names_are_refused_both_ways(name: str) -> None:
    with pytest.raises(FormatError):
        CpioArchive((CpioEntry.file(name, b"x"),)).to_bytes()
    raw = name.encode() + b"\0"
    member = _member_header(mode=0o100644, nlink=1, namesize=len(raw)) + raw
    member += bytes(-len(member) % 4)
    trailer = _member_header(nlink=1, namesize=11) + b"TRAILER!!!\0"
    with pytest.raises(FormatError):
        CpioArchive.parse(member + trailer + bytes(-len(trailer) % 4))


def test_get_ignores_leading_slash_and_dot() -> None:
    archive = CpioArchive((CpioEntry.file("./etc/a", b"1"), CpioEntry.file("b/", b"2")))
    for name in ("etc/a", "/etc/a", "./etc/a"):
        found = archive.get(name)
        assert found is not None and found.data == b"1"
    assert archive.get("b") is None
    assert archive.get("etc/a/") is None
