"""``luksDump`` text and JSON against what cryptsetup 2.6.1 printed for the same headers
(``tests/vectors/luks2``: one written by cryptsetup, one by cvm)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.disk.dump import dump_json, dump_text
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume

VECTORS = Path(__file__).parent.parent / "vectors" / "luks2"
HEADERS = ("cryptsetup-mixed", "cryptsetup-token", "cvm-flags")
IMAGE_SIZE = 17 << 20  # cryptsetup wants the 16 MiB its header names, and more


def header_image(name: str, where: Path) -> Path:
    """The vector's two header copies at the start of a sparse 17 MiB file."""
    image = where / f"{name}.img"
    image.write_bytes(gzip.decompress((VECTORS / f"{name}.hdr.gz").read_bytes()))
    with image.open("r+b") as f:
        f.truncate(IMAGE_SIZE)
    return image


def _volume(image: Path) -> Luks2Volume:
    with FileStorage(image, read_only=True) as storage:
        return Luks2Volume.open(storage)


@pytest.mark.parametrize("name", HEADERS)
def test_the_text_is_what_cryptsetup_printed(tmp_path: Path, name: str) -> None:
    volume = _volume(header_image(name, tmp_path))
    expected = (VECTORS / f"{name}.luksdump.txt").read_text()
    assert dump_text(volume) + "\n" == expected


@pytest.mark.parametrize("name", HEADERS)
def test_the_json_is_what_cryptsetup_printed(tmp_path: Path, name: str) -> None:
    volume = _volume(header_image(name, tmp_path))
    expected = (VECTORS / f"{name}.json").read_text()
    assert dump_json(volume) == expected
    compact = json.dumps(json.loads(expected), separators=(",", ":"), ensure_ascii=False)
    assert dump_json(volume, compact=True) == compact == volume.metadata.to_text()


@pytest.mark.parametrize("name", HEADERS)
def test_the_command_prints_what_cryptsetup_printed(tmp_path: Path, name: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    image = header_image(name, tmp_path)
    assert execute(["luks", "dump", str(image)]) == 0
    assert capsys.readouterr().out == (VECTORS / f"{name}.luksdump.txt").read_text()
    assert execute(["luks", "dump", str(image), "--json"]) == 0
    assert capsys.readouterr().out == (VECTORS / f"{name}.json").read_text()


def test_the_vectors_hold_what_they_are_kept_for(tmp_path: Path) -> None:
    """What each vector is there to show (PROVENANCE.md), so a re-recorded one keeps it."""
    mixed = _volume(header_image("cryptsetup-mixed", tmp_path)).metadata
    assert list(mixed.keyslots) == [1, 0, 7] and list(mixed.tokens) == [5, 2]
    assert [mixed.keyslots[n].priority for n in (0, 1, 7)] == [None, 2, 0]
    assert mixed.digests[1].segments == () and mixed.digests[1].keyslots == (7,)
    token = _volume(header_image("cryptsetup-token", tmp_path)).tokens[0]
    assert token["näme"] == "grüß / été ☃ \N{GRINNING FACE}"
    assert token["nested"] == [[1, {"a": [], "b": {}}], [], {"c": [[]]}]
    flags = _volume(header_image("cvm-flags", tmp_path))
    assert flags.metadata.config.flags == ("allow-discards", "no-read-workqueue")
    assert flags.segment.flags == ("cvm-one", "cvm-two") and flags.segment.size == 1 << 19
    assert flags.label == "cvm-flags"
