"""Reading both LUKS2 header copies parses a JSON area the two share once; copies that differ
are each parsed, and a refused area is refused for each copy that holds it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cvm.disk.header_store import load_header
from cvm.disk.keyslot import KdfSpec
from cvm.disk.volume import Luks2Volume
from cvm.errors import FormatError
from cvm.formats.luks2.binary_header import CSUM_SPAN
from cvm.formats.luks2.header_copy import header_checksum
from cvm.formats.luks2.metadata import Metadata

SIZE = 17 << 20
HDR = 0x4000


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The JSON areas Metadata.parse is asked for, in order."""
    seen: list[bytes] = []
    original = Metadata.parse

    def counting(json_area: bytes) -> Metadata:
        seen.append(json_area)
        return original(json_area)

    monkeypatch.setattr(Metadata, "parse", counting)
    yield seen


def _volume(memory_storage: Any, kdf: KdfSpec) -> Any:
    storage = memory_storage(SIZE)
    Luks2Volume.format(storage, b"first", kdf, label="one")
    return storage


def test_copies_in_step_parse_their_json_once(memory_storage: Any, fast_kdf: KdfSpec,
                                              parsed: list[bytes]) -> None:
    storage = _volume(memory_storage, fast_kdf)
    parsed.clear()
    loaded = load_header(storage)
    assert parsed == [bytes(storage.data[4096:HDR])]
    assert loaded.warnings == () and loaded.needs_repair is False
    assert bytes(storage.data[4096:HDR]) == bytes(storage.data[HDR + 4096 : 2 * HDR])


def test_copies_that_differ_are_each_parsed(memory_storage: Any, fast_kdf: KdfSpec,
                                            parsed: list[bytes]) -> None:
    storage = _volume(memory_storage, fast_kdf)
    old_secondary = bytes(storage.data[HDR : 2 * HDR])
    Luks2Volume.open(storage).add_token({"type": "t", "keyslots": []})
    storage.data[HDR : 2 * HDR] = old_secondary  # the secondary one write behind
    parsed.clear()
    loaded = load_header(storage)
    assert parsed == [bytes(storage.data[4096:HDR]), old_secondary[4096:]]
    assert loaded.header.metadata.tokens == {0: {"type": "t", "keyslots": []}}
    assert loaded.needs_repair is True


def test_a_json_area_both_copies_hold_is_refused_for_each(memory_storage: Any,
                                                          fast_kdf: KdfSpec,
                                                          parsed: list[bytes]) -> None:
    storage = _volume(memory_storage, fast_kdf)
    volume = Luks2Volume.open(storage)
    bad = volume.header.metadata.to_area()[:-1] + b"\1"  # a byte after the terminator
    for offset in (0, HDR):
        copy = bytearray(storage.data[offset : offset + HDR])
        copy[4096:] = bad
        copy[CSUM_SPAN] = header_checksum(bytes(copy), "sha256")
        storage.data[offset : offset + HDR] = copy
    parsed.clear()
    with pytest.raises(FormatError) as refused:
        load_header(storage)
    assert str(refused.value).count("JSON area has bytes after its terminator") == 2
    assert len(parsed) == 2  # a refusal is not remembered: each copy is refused on its own
