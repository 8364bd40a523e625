"""A bundle is built beside its folder and put in place whole: a failed build leaves the earlier
bundle as it was, a rebuild leaves nothing of the earlier one behind, and a folder that holds
anything else is refused, never written into."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import cvm.image.bundle as bundle_module
from cvm.errors import UsageError
from cvm.image.bundle import ImageSpec, build_image

FAST = ImageSpec(kdf_cost="fast", seed=11)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_build_that_fails_leaves_the_earlier_bundle_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "image"
    build_image(out, FAST)
    before = _digests(out)

    def broken(*args: object) -> bytes:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(bundle_module, "wrap_state_key", broken)  # after the disk is written
    with pytest.raises(OSError, match="No space left"):
        build_image(out, ImageSpec(kdf_cost="fast", seed=12))
    assert _digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image"]  # no staging left behind


def test_a_rebuild_replaces_the_whole_bundle(tmp_path: Path) -> None:
    out = tmp_path / "image"
    build_image(out, ImageSpec(modes=("plain", "sev-snp"), kdf_cost="fast", seed=13))
    assert (out / "host-vtpm-state.key").is_file()
    built = build_image(out, FAST)
    assert built.out == out and (out / "image.json").is_file()
    assert not (out / "host-vtpm-state.key").exists()  # the earlier build's key is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image"]


def test_an_empty_or_new_folder_is_built_in(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert (build_image(tmp_path / "empty", FAST).out / "disk.img").is_file()
    assert (build_image(tmp_path / "new" / "deeper", FAST).out / "disk.img").is_file()


@pytest.mark.parametrize("occupant", ["a file", "a folder of other files"])
def test_a_folder_holding_anything_else_is_refused_and_left_alone(tmp_path: Path,
                                                                 occupant: str) -> None:
    out = tmp_path / "image"
    if occupant == "a file":
        out.write_text("mine\n")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UsageError, match=rf"^{out}: holds files that are not an image bundle"):
        build_image(out, FAST)
    assert sorted(tmp_path.rglob("*")) == before
