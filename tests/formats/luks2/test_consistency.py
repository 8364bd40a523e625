"""Header consistency rules (cryptsetup's ``LUKS2_hdr_validate``): each crafted header is
refused by cvm with the rule's message and, in the interop test, by cryptsetup 2.6 itself.

The base header has two keyslots sharing one digest, a token, a dynamic segment at 16 MiB and
cryptsetup's default layout; each case changes one thing in its JSON and seals both copies
with valid checksums, so only the consistency rule under test can refuse it.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.errors import FormatError
from cvm.formats.luks2.binary_header import BINARY_HEADER_SIZE, BinaryHeader
from cvm.formats.luks2.header_copy import HeaderCopy, header_checksum

HDR_SIZE = 0x4000
KEYSLOTS_START = 2 * HDR_SIZE
DATA_OFFSET = 16 << 20
KEYSLOTS_SIZE = DATA_OFFSET - KEYSLOTS_START
AREA = 258048
IMAGE_SIZE = DATA_OFFSET + (1 << 20)
Edit = Callable[[dict[str, Any]], None]


class _Memory:
    def __init__(self, size: int) -> None:
        self.data = bytearray(size)

    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.data[offset : offset + size])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        chunk = bytes(data)
        self.data[offset : offset + len(chunk)] = chunk

    def flush(self) -> None:
        return None


def _base() -> dict[str, Any]:
    storage = _Memory(IMAGE_SIZE)
    fast = KdfSpec("pbkdf2", iterations=1000)
    volume = Luks2Volume.format(storage, b"one", fast, label="consistency")
    volume.add_keyslot(volume.unlock(b"one"), b"two", fast)
    volume.add_token({"type": "cvm-test", "keyslots": ["1"]})
    value: dict[str, Any] = volume.metadata.to_json()
    return value


BASE = _base()


def seal(value: dict[str, Any], hdr_size: int = HDR_SIZE) -> bytes:
    """Both header copies of ``value`` (any JSON), each with a valid checksum."""
    text = json.dumps(value, separators=(",", ":")).encode()
    out = b""
    for secondary in (False, True):
        binary = BinaryHeader(secondary, hdr_size, 3, "", "sha256", bytes(64),
                              "6f3d5d0e-8a57-4a3e-9c1e-0d1c2b3a4f5e", "",
                              hdr_size if secondary else 0, bytes(64))
        area = binary.to_bytes() + text.ljust(hdr_size - BINARY_HEADER_SIZE, b"\0")
        csum = header_checksum(area, "sha256")
        out += area[:0x1C0] + csum + area[0x200:]
    return out


def _set(path: str, item: object) -> Edit:
    def edit(value: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = value
        for key in parents:
            target = target[key]
        target[last] = item
    return edit


def _both(*edits: Edit) -> Edit:
    def edit(value: dict[str, Any]) -> None:
        for one in edits:
            one(value)
    return edit


def _second_segment(first: dict[str, Any], second: dict[str, Any]) -> Edit:
    def edit(value: dict[str, Any]) -> None:
        base = value["segments"]["0"]
        value["segments"] = {"0": {**base, **first}, "1": {**base, **second}}
        value["digests"]["0"]["segments"] = ["0", "1"]
    return edit


def _orphan_digest(value: dict[str, Any]) -> None:
    value["digests"]["1"] = {**value["digests"]["0"], "keyslots": ["1"], "segments": []}


def _no_digest_keyslot(value: dict[str, Any]) -> None:
    value["digests"]["0"]["keyslots"] = ["0"]
    value["tokens"] = {}


# name -> (edit of the base JSON, cvm's message)
CASES: dict[str, tuple[Edit, str]] = {
    "data segment inside the keyslots area": (
        _set("segments.0.offset", str(KEYSLOTS_START + 2 * AREA)), "lies inside the header"),
    "data segment inside the header copies": (
        _set("segments.0.offset", "4096"), "lies inside the header"),
    "two keyslots sharing one area": (
        _set("keyslots.1.area.offset", str(KEYSLOTS_START)), "overlaps the area of keyslots"),
    "keyslot areas overlapping": (
        _set("keyslots.1.area.offset", str(KEYSLOTS_START + 4096)), "overlaps the area"),
    "keyslot area past the keyslots area": (
        _set("keyslots.1.area.offset", str(DATA_OFFSET - 4096)), "outside the keyslots area"),
    "keyslot area in the header copies": (
        _set("keyslots.0.area.offset", str(HDR_SIZE)),
        r"keyslots.0 area \[16384, 274432\) lies outside the keyslots area "
        r"\[32768, 16777216\)$"),
    "empty keyslot area": (_set("keyslots.1.area.size", "0"), "area is empty"),
    "digest names a missing keyslot": (
        _set("digests.0.keyslots", ["0", "1", "5"]), "names no keyslot 5"),
    "digest names a missing segment": (
        _set("digests.0.segments", ["0", "3"]), "names no segment 3"),
    "keyslot bound to no digest": (_no_digest_keyslot, "bound to 0 digests"),
    "keyslot bound to two digests": (_orphan_digest, "bound to 2 digests"),
    "segment bound to no digest": (_set("digests.0.segments", []), "bound to no digest"),
    "token names a missing keyslot": (_set("tokens.0.keyslots", ["9"]), "names no keyslot 9"),
    "token with an empty type": (_set("tokens.0.type", ""), "empty type"),
    "no segment": (_both(_set("segments", {}), _set("digests.0.segments", [])),
                   r"^LUKS2 metadata: segments is empty$"),
    "segment numbering with a gap": (
        _both(_set("segments", {"1": BASE["segments"]["0"]}), _set("digests.0.segments", ["1"])),
        "gap at 0"),
    "dynamic segment before another": (
        _second_segment({}, {"offset": str(32 << 20), "size": str(1 << 20)}),
        "dynamic but not the last"),
    "overlapping segments": (
        _second_segment({"size": str(2 << 20)}, {"offset": str(17 << 20)}), "overlaps segments"),
    "segment of size 0": (_set("segments.0.size", "0"), "non-zero size"),
    "only a backup segment": (
        _set("segments.0.flags", ["backup-previous"]),
        r"^LUKS2 metadata: segments has no regular segment$"),
    "two segments at one offset": (
        _second_segment({"size": str(1 << 20)}, {"size": str(1 << 20)}),
        "segments.0 overlaps segments.1"),
    "segment reaching 2^64": (
        _second_segment({"size": str(1 << 20)}, {"offset": str((1 << 64) - 4096),
                                                 "size": "4096"}),
        r"segments.1 offset \+ size overflows 64 bits"),
    "json_size that is no header size": (
        _set("config.json_size", str(HDR_SIZE)), "not one of 16 KiB"),
    "regular segment behind a backup segment": (
        _second_segment({"flags": ["backup-final"]}, {"offset": str(17 << 20)}),
        "behind backup segment 0"),
    "keyslots_size not 4 KiB-aligned": (
        _set("config.keyslots_size", str(KEYSLOTS_SIZE - 512)), "not a multiple of 4096"),
    "keyslots_size over 128 MiB": (
        _both(_set("config.keyslots_size", str(129 << 20)), _set("segments.0.offset", "0")),
        "not a multiple of 4096 of at most"),
    "keyslots area reaching into the data": (
        _set("config.keyslots_size", str(KEYSLOTS_SIZE + 4096)), "lies inside the header"),
}
ACCEPTED: dict[str, Edit] = {
    "the base header": _both(),
    "a detached header with a large keyslots area": _both(
        _set("segments.0.offset", "0"), _set("config.keyslots_size", str(64 << 20))),
    "two segments in order": _second_segment(
        {"size": str(1 << 20)}, {"offset": str(17 << 20)}),
    "a segment ending just below 2^64": _second_segment(
        {"size": str(1 << 20)}, {"offset": str((1 << 64) - 4096), "size": "3584",
                                 "sector_size": 512}),
    "a keyslot area ending where the data starts": _set(
        "keyslots.1.area.offset", str(DATA_OFFSET - AREA)),
    "a detached header with a 128 MiB keyslots area": _both(
        _set("segments.0.offset", "0"), _set("config.keyslots_size", str(128 << 20))),
}


def _edited(edit: Edit) -> dict[str, Any]:
    value = copy.deepcopy(BASE)
    edit(value)
    return value


@pytest.mark.parametrize("case", CASES)
def test_cvm_refuses(case: str) -> None:
    edit, message = CASES[case]
    with pytest.raises(FormatError, match=message):
        HeaderCopy.parse(seal(_edited(edit))[:HDR_SIZE])


@pytest.mark.parametrize("case", ACCEPTED)
def test_cvm_accepts(case: str) -> None:
    HeaderCopy.parse(seal(_edited(ACCEPTED[case]))[:HDR_SIZE])


def _image(tmp_path: Path, value: dict[str, Any], size: int = 0) -> Path:
    """The sealed header in a sparse file big enough for its keyslots area (or ``size``)."""
    path = tmp_path / "crafted.img"
    with path.open("wb") as sink:
        sink.write(seal(value))
        sink.truncate(size or 2 * HDR_SIZE + (160 << 20))
    return path


@pytest.mark.interop
@pytest.mark.parametrize("case", [*CASES, *ACCEPTED])
def test_cryptsetup_agrees(tmp_path: Path, require_tool: Callable[[str], str],
                           case: str) -> None:
    """cryptsetup 2.6 gives the same verdict (``luksDump`` and ``isLuks``) on the same bytes."""
    tool = require_tool("cryptsetup")
    refused = case in CASES
    value = _edited(CASES[case][0] if refused else ACCEPTED[case])
    image = _image(tmp_path, value)
    before = image.read_bytes()
    dump = subprocess.run([tool, "luksDump", str(image)], capture_output=True, text=True,
                          check=False)
    is_luks = subprocess.run([tool, "isLuks", "--type", "luks2", str(image)],
                             capture_output=True, text=True, check=False)
    assert (dump.returncode != 0) == refused, dump.stderr
    assert (is_luks.returncode != 0) == refused
    assert image.read_bytes() == before


def test_device_smaller_than_the_keyslots_area(tmp_path: Path) -> None:
    image = _image(tmp_path, _edited(ACCEPTED["a detached header with a large keyslots area"]),
                   size=DATA_OFFSET)
    with FileStorage(image, read_only=True) as storage, \
            pytest.raises(FormatError, match="truncated"):
        Luks2Volume.open(storage)


@pytest.mark.interop
def test_cryptsetup_agrees_on_a_small_device(tmp_path: Path,
                                             require_tool: Callable[[str], str]) -> None:
    image = _image(tmp_path, _edited(ACCEPTED["a detached header with a large keyslots area"]),
                   size=DATA_OFFSET)
    dump = subprocess.run([require_tool("cryptsetup"), "luksDump", str(image)],
                          capture_output=True, text=True, check=False)
    assert dump.returncode != 0 and "too small" in dump.stderr
