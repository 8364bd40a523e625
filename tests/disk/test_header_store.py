"""The two LUKS2 header copies (spec v1.1.4 section 2.2): which copy wins, what is reported,
when a rewrite is due, how short devices are named, and the order of a header write.

cryptsetup's verdicts on the same images (``isLuks``, ``luksDump``) are in the interop test at
the end: a damaged copy is recovered from the other, a truncated device is refused.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cvm.disk.header_store import load_header, store_header
from cvm.disk.keyslot import KdfSpec
from cvm.disk.volume import Luks2Volume
from cvm.errors import FormatError

SIZE = 17 << 20
HDR = 0x4000


def _volume(memory_storage: Any, kdf: KdfSpec, hdr_size: int = HDR) -> Any:
    storage = memory_storage(SIZE)
    Luks2Volume.format(storage, b"first", kdf, hdr_size=hdr_size)
    return storage


def _short(memory_storage: Any, data: bytes) -> Any:
    storage = memory_storage(0)
    storage.data = bytearray(data)
    return storage


def test_two_good_copies_need_nothing(memory_storage: Any, fast_kdf: KdfSpec) -> None:
    storage = _volume(memory_storage, fast_kdf)
    loaded = load_header(storage)
    assert loaded.warnings == () and loaded.needs_repair is False
    assert loaded.header.binary.secondary is False


@pytest.mark.parametrize("hdr_size", [HDR, 0x8000])
def test_a_broken_primary_is_recovered_from_the_secondary(memory_storage: Any,
                                                          fast_kdf: KdfSpec,
                                                          hdr_size: int) -> None:
    """With the primary unreadable the secondary is found by probing 16 KiB, 32 KiB, ..."""
    storage = _volume(memory_storage, fast_kdf, hdr_size)
    storage.data[0] ^= 0xFF
    loaded = load_header(storage)
    assert loaded.header.binary.secondary is True
    assert loaded.header.binary.hdr_offset == hdr_size
    assert loaded.warnings == (
        "primary header is invalid (LUKS2 binary header: bad magic (not a LUKS device))",
        "recovered from the secondary header",
    )
    assert loaded.needs_repair is True


def test_a_broken_secondary_is_recovered_from_the_primary(memory_storage: Any,
                                                          fast_kdf: KdfSpec) -> None:
    storage = _volume(memory_storage, fast_kdf)
    storage.data[HDR + 4200] ^= 0x01
    loaded = load_header(storage)
    assert loaded.header.binary.secondary is False
    assert loaded.warnings == (
        "secondary header is invalid (LUKS2 secondary header: checksum mismatch)",
        "recovered from the primary header",
    )
    assert loaded.needs_repair is True


def test_the_newer_copy_wins_either_way(memory_storage: Any, fast_kdf: KdfSpec) -> None:
    storage = _volume(memory_storage, fast_kdf)
    first = load_header(storage).header
    old = bytes(storage.data[: 2 * HDR])
    store_header(storage, first, (bytes(64), bytes(64)))
    new = bytes(storage.data[: 2 * HDR])
    for primary, secondary, winner in ((old, new, "secondary"), (new, old, "primary")):
        storage.data[:HDR] = primary[:HDR]
        storage.data[HDR : 2 * HDR] = secondary[HDR:]
        loaded = load_header(storage)
        seqid = first.binary.seqid
        assert loaded.warnings == (f"the {winner} header is newer (seqid {seqid + 1} > "
                                   f"{seqid}); using it",)
        assert loaded.header.binary.seqid == seqid + 1
        assert loaded.header.binary.secondary is (winner == "secondary")
        assert loaded.needs_repair is True


def test_copies_that_differ_at_the_same_seqid_use_the_primary(memory_storage: Any,
                                                              fast_kdf: KdfSpec) -> None:
    storage = _volume(memory_storage, fast_kdf)
    header = load_header(storage).header
    tokened = replace(header, metadata=replace(header.metadata,
                                               tokens={0: {"type": "t", "keyslots": []}}))
    secondary = replace(tokened, binary=replace(tokened.binary, secondary=True, hdr_offset=HDR))
    storage.data[HDR : 2 * HDR] = secondary.to_bytes()
    loaded = load_header(storage)
    assert loaded.warnings == ("header copies differ at the same seqid; using the primary",)
    assert loaded.header.metadata.tokens == {}
    assert loaded.needs_repair is True


def test_no_valid_copy_names_both_problems(memory_storage: Any, fast_kdf: KdfSpec) -> None:
    storage = _volume(memory_storage, fast_kdf)
    storage.data[0] ^= 0xFF
    storage.data[HDR + 4200] ^= 0x01
    with pytest.raises(FormatError) as raised:
        load_header(storage)
    assert str(raised.value) == (
        "not a valid LUKS2 volume: primary header is invalid (LUKS2 binary header: bad magic "
        "(not a LUKS device)); secondary header is invalid (LUKS2 secondary header: checksum "
        "mismatch)")


def test_a_copy_at_the_wrong_place_is_refused(memory_storage: Any, fast_kdf: KdfSpec) -> None:
    """A primary copy written at the secondary's offset says where it belongs."""
    storage = _volume(memory_storage, fast_kdf)
    storage.data[HDR : 2 * HDR] = storage.data[:HDR]
    loaded = load_header(storage)
    assert loaded.warnings[0] == ("secondary header is invalid (LUKS2 header at 16384 says it "
                                  "is at 0)")
    header = load_header(storage).header
    moved = replace(header, binary=replace(header.binary, secondary=True, hdr_offset=HDR))
    storage.data[:HDR] = bytes(HDR)
    storage.data[0x8000 : 0x8000 + HDR] = moved.to_bytes()
    storage.data[HDR : 2 * HDR] = bytes(HDR)
    # probing finds the copy at 32 KiB, which says it belongs at 16 KiB: no valid copy
    with pytest.raises(FormatError, match=r"^not a valid LUKS2 volume: "):
        load_header(storage)


@pytest.mark.parametrize(
    ("size", "primary", "secondary"),
    [
        (100, "LUKS2 header at 0: the device is truncated",
         "LUKS2 header at 16384: the device is truncated"),
        (4096, None, "LUKS2 header at 16384: the device is truncated"),
        (5000, "LUKS2 header at 0: the device is truncated",
         "LUKS2 header at 16384: the device is truncated"),
        (HDR + 4095, None, "LUKS2 header at 16384: the device is truncated"),
    ],
)
def test_short_devices_are_named_truncated(memory_storage: Any, fast_kdf: KdfSpec, size: int,
                                           primary: str | None, secondary: str) -> None:
    whole = _volume(memory_storage, fast_kdf)
    storage = _short(memory_storage, bytes(whole.data[:size]))
    if primary is None:
        # a full primary binary header fits, so the primary's own size decides (or it parses)
        if size == 4096:
            primary = "LUKS2 header at 0: the device is truncated"
        else:
            with pytest.raises(FormatError, match=r"^LUKS2 device is truncated: 20479 bytes, "
                                                  r"the header copies and keyslots area need "):
                load_header(storage)
            return
    with pytest.raises(FormatError) as raised:
        load_header(storage)
    assert str(raised.value) == (f"not a valid LUKS2 volume: primary header is invalid "
                                 f"({primary}); secondary header is invalid ({secondary})")


def test_exact_sizes_are_enough(memory_storage: Any, fast_kdf: KdfSpec) -> None:
    """A primary binary header that ends the device is read (then judged on its own bytes);
    both copies and the keyslots area exactly filling the device are enough."""
    junk = _short(memory_storage, bytes(4096))
    with pytest.raises(FormatError, match=r"primary header is invalid \(LUKS2 binary header: "
                                          r"bad magic"):
        load_header(junk)
    whole = _volume(memory_storage, fast_kdf)
    config = load_header(whole).header.metadata.config
    needed = 2 * HDR + config.keyslots_size
    assert load_header(_short(memory_storage, bytes(whole.data[:needed]))).warnings == ()
    with pytest.raises(FormatError) as raised:
        load_header(_short(memory_storage, bytes(whole.data[:needed - 1])))
    assert str(raised.value) == (f"LUKS2 device is truncated: {needed - 1} bytes, the header "
                                 f"copies and keyslots area need {needed}")


class _Recorder:
    """Storage that records each write and flush in order."""

    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.log: list[tuple[str, int]] = []

    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.data[offset : offset + size])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        chunk = bytes(data)
        self.data[offset : offset + len(chunk)] = chunk
        self.log.append(("write", offset))

    def flush(self) -> None:
        self.log.append(("flush", 0))


def test_a_write_is_primary_flush_secondary_flush(memory_storage: Any,
                                                  fast_kdf: KdfSpec) -> None:
    storage = _volume(memory_storage, fast_kdf)
    header = load_header(storage).header
    recorder = _Recorder(storage.data)
    salts = (bytes(range(64)), bytes(range(64, 128)))
    written = store_header(recorder, header, salts)
    assert recorder.log == [("write", 0), ("flush", 0), ("write", HDR), ("flush", 0)]
    assert written.binary.seqid == header.binary.seqid + 1
    assert written.binary.secondary is False and written.binary.hdr_offset == 0
    assert written.binary.salt == salts[0]
    assert written.binary.csum != header.binary.csum
    loaded = load_header(recorder)
    assert loaded.warnings == () and loaded.header == written
    secondary = load_header(_short(memory_storage, bytes(HDR) + bytes(storage.data[HDR:])))
    assert secondary.header.binary.salt == salts[1]
    assert secondary.header.binary.seqid == written.binary.seqid
    assert secondary.header.binary.hdr_offset == HDR


@pytest.mark.interop
def test_cryptsetup_recovers_and_refuses_the_same(memory_storage: Any, fast_kdf: KdfSpec,
                                                  require_tool: Callable[[str], str],
                                                  tmp_path: Path) -> None:
    tool = require_tool("cryptsetup")
    image = tmp_path / "volume.img"
    for damage, accepted in (((0,), True), ((HDR + 4200,), True), ((0, HDR + 4200), False)):
        storage = _volume(memory_storage, fast_kdf)
        for offset in damage:
            storage.data[offset] ^= 0x01
        image.write_bytes(bytes(storage.data))
        done = subprocess.run([tool, "isLuks", "--type", "luks2", str(image)],
                              capture_output=True, check=False)
        assert (done.returncode == 0) is accepted
        try:
            load_header(storage)
            cvm_accepts = True
        except FormatError:
            cvm_accepts = False
        assert cvm_accepts is accepted
    storage = _volume(memory_storage, fast_kdf)
    needed = 2 * HDR + load_header(storage).header.metadata.config.keyslots_size
    image.write_bytes(bytes(storage.data[: needed - 4096]))
    dump = subprocess.run([tool, "luksDump", str(image)], capture_output=True, text=True,
                          check=False)
    assert dump.returncode != 0
    image.write_bytes(bytes(_headers_only(memory_storage, fast_kdf).data))
    assert image.stat().st_size == 2 * HDR
    assert subprocess.run([tool, "isLuks", "--type", "luks2", str(image)],
                          check=False).returncode == 0


def test_the_secondary_is_looked_for_only_where_the_primary_says(memory_storage: Any,
                                                                 fast_kdf: KdfSpec) -> None:
    """A valid primary names the secondary's offset; a header copy elsewhere (here one left by
    an earlier 32 KiB-header format) is not consulted, as in cryptsetup."""
    earlier = _volume(memory_storage, fast_kdf, 0x8000)
    storage = _volume(memory_storage, fast_kdf)
    storage.data[HDR + 4200] ^= 0x01
    storage.data[0x8000 : 0x10000] = earlier.data[0x8000 : 0x10000]
    loaded = load_header(storage)
    assert loaded.header.binary.hdr_size == HDR and loaded.header.binary.secondary is False
    assert loaded.warnings == (
        "secondary header is invalid (LUKS2 secondary header: checksum mismatch)",
        "recovered from the primary header",
    )


def _headers_only(memory_storage: Any, fast_kdf: KdfSpec) -> Any:
    """A detached header holding no keyslot: the two copies are the whole file."""
    header = load_header(_volume(memory_storage, fast_kdf)).header
    meta = header.metadata
    bare = replace(meta, keyslots={}, tokens={},
                   segments={0: replace(meta.segments[0], offset=0)},
                   digests={0: replace(meta.digests[0], keyslots=())},
                   config=replace(meta.config, keyslots_size=0))
    storage = memory_storage(2 * HDR)
    store_header(storage, replace(header, metadata=bare), (bytes(64), bytes(64)))
    return storage


def test_copies_that_end_exactly_at_the_device_end_are_read(memory_storage: Any,
                                                            fast_kdf: KdfSpec) -> None:
    storage = _headers_only(memory_storage, fast_kdf)
    loaded = load_header(storage)
    assert loaded.warnings == () and loaded.needs_repair is False
    assert loaded.header.metadata.config.keyslots_size == 0


def test_a_repair_from_the_secondary_writes_a_true_primary(memory_storage: Any,
                                                           fast_kdf: KdfSpec) -> None:
    """The header recovered from the secondary copy is written back as a primary at 0 (magic
    and offset its own) and a secondary at ``hdr_size``."""
    storage = _volume(memory_storage, fast_kdf)
    storage.data[0] ^= 0xFF
    recovered = load_header(storage).header
    assert recovered.binary.secondary is True
    written = store_header(storage, recovered, (bytes(64), bytes(64)))
    assert written.binary.secondary is False and written.binary.hdr_offset == 0
    assert bytes(storage.data[:6]) == b"LUKS\xba\xbe"
    assert bytes(storage.data[HDR : HDR + 6]) == b"SKUL\xba\xbe"
    loaded = load_header(storage)
    assert loaded.warnings == () and loaded.header == written
