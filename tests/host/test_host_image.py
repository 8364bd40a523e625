"""What the host reads of an image bundle: the files its manifest names, inside the folder, never
the owner's folder — however the name gets there (``..``, symbolic links, a relative folder)."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import pytest

from cvm.errors import CvmError, FormatError, UsageError
from cvm.host.vm_run import HostDisk, load_host_image
from cvm.image.bundle import ImageSpec, build_image


def _bundle(folder: Path, **names: str | None) -> dict[str, object]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "owner").mkdir(exist_ok=True)
    (folder / "owner" / "provisioning.key").write_bytes(b"k" * 32)
    for name, data in (("disk.img", b""), ("OVMF.fd", b"ovmf"), ("VARS.fd", b"vars"),
                       ("SVSM.bin", b"svsm"), ("state.bin", b"state")):
        (folder / name).write_bytes(data)
    manifest: dict[str, object] = {
        "schema": "cvm-image/2",
        "firmware": {"ovmf": names.get("ovmf", "OVMF.fd"), "vars": "VARS.fd",
                     "svsm": names.get("svsm", "SVSM.bin")},
        "vtpm": {"state": names.get("state", "state.bin"), "host_state_key": None},
        "disk": {"file": "disk.img"}}
    (folder / "image.json").write_text(json.dumps(manifest))
    return manifest


def test_the_files_the_manifest_names_are_read(tmp_path: Path) -> None:
    _bundle(tmp_path / "img")
    image = load_host_image(tmp_path / "img")
    assert (image.firmware, image.varstore, image.svsm, image.state, image.state_key) == (
        b"ovmf", b"vars", b"svsm", b"state", None)
    assert image.disk == tmp_path / "img" / "disk.img"
    assert image.state_path == tmp_path / "img" / "state.bin"


def test_a_relative_folder_and_a_folder_behind_a_link_are_the_same_image(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _bundle(tmp_path / "img")
    (tmp_path / "link").symlink_to(tmp_path / "img")
    monkeypatch.chdir(tmp_path)
    assert load_host_image(Path("img")).firmware == b"ovmf"
    assert load_host_image(Path("link")).svsm == b"svsm"
    assert load_host_image(Path("link/../img")).state == b"state"


def test_a_missing_optional_file_is_none_a_missing_required_one_is_refused(
        tmp_path: Path) -> None:
    _bundle(tmp_path, svsm="nowhere.bin")
    assert load_host_image(tmp_path).svsm is None
    _bundle(tmp_path, state="nowhere.bin")
    missing = f"^{re.escape(str(tmp_path))}: the image has no nowhere.bin$"
    with pytest.raises(UsageError, match=missing):
        load_host_image(tmp_path)


@pytest.mark.parametrize("how", ["dotdot", "link", "absolute", "sibling"])
def test_a_file_outside_the_folder_is_refused(tmp_path: Path, how: str) -> None:
    outside = tmp_path / "outside.fd"
    outside.write_bytes(b"x")
    (tmp_path / "img-other").mkdir()
    (tmp_path / "img-other" / "f.fd").write_bytes(b"x")
    name = {"dotdot": "../outside.fd", "link": "fw.fd", "absolute": str(outside),
            "sibling": "../img-other/f.fd"}[how]
    _bundle(tmp_path / "img", ovmf=name)
    (tmp_path / "img" / "fw.fd").symlink_to(outside)
    refusal = f"^{re.escape(name)}: the image names a file outside its folder$"
    with pytest.raises(UsageError, match=refusal):
        load_host_image(tmp_path / "img")


@pytest.mark.parametrize("name", ["owner/provisioning.key", "./owner/../owner/provisioning.key",
                                  "key", "sub/../owner/provisioning.key", "owner"])
def test_the_owners_folder_is_never_read(tmp_path: Path, name: str) -> None:
    _bundle(tmp_path, ovmf=name)
    (tmp_path / "key").symlink_to(tmp_path / "owner" / "provisioning.key")
    (tmp_path / "sub").mkdir()
    refusal = f"^{re.escape(name)}: the host never reads the owner's folder$"
    with pytest.raises(UsageError, match=refusal):
        load_host_image(tmp_path)


def test_a_file_whose_name_starts_like_the_owners_folder_is_read(tmp_path: Path) -> None:
    _bundle(tmp_path, ovmf="owner.fd", svsm="owners/SVSM.bin")
    (tmp_path / "owner.fd").write_bytes(b"mine")
    (tmp_path / "owners").mkdir()
    (tmp_path / "owners" / "SVSM.bin").write_bytes(b"also mine")
    image = load_host_image(tmp_path)
    assert (image.firmware, image.svsm) == (b"mine", b"also mine")


def test_the_folder_itself_is_not_a_file(tmp_path: Path) -> None:
    _bundle(tmp_path, ovmf=".")
    with pytest.raises(IsADirectoryError):
        load_host_image(tmp_path)


def test_the_disk_reaches_fsync_only_after_a_write(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    (tmp_path / "disk.img").write_bytes(bytes(4096))
    log: list[bytes] = []
    disk = HostDisk(tmp_path / "disk.img", log)
    try:
        assert disk.read(512, 4) == bytes(4)
        disk.flush()
        assert synced == []
        disk.write(512, b"data")
        disk.flush()
        assert len(synced) == 1
        disk.flush()  # nothing written since
        assert len(synced) == 1
        disk.write(0, b"more")
        disk.write(8, b"again")
        disk.flush()
        assert len(synced) == 2
        assert disk.read(512, 4) == b"data"
    finally:
        disk.close()
    assert log == [b"disk read 0x200+0x4", b"disk write 0x200+0x4", b"disk write 0x0+0x4",
                   b"disk write 0x8+0x5", b"disk read 0x200+0x4"]


def test_a_write_that_fails_still_leaves_the_disk_to_flush(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    (tmp_path / "disk.img").write_bytes(bytes(4096))
    disk = HostDisk(tmp_path / "disk.img", [])

    def fail(fd: int, data: object, offset: int) -> int:
        raise OSError(28, "No space left on device")

    try:
        with monkeypatch.context() as patch:
            patch.setattr(os, "pwrite", fail)
            with pytest.raises(OSError, match="No space"):
                disk.write(0, b"x")
        disk.flush()
        assert len(synced) == 1
    finally:
        disk.close()


def _with_disk(folder: Path, name: object) -> None:
    manifest = _bundle(folder)
    manifest["disk"] = {"file": name}
    (folder / "image.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(("name", "refusal"), [
    ("../outside.img", "the image names a file outside its folder"),
    ("owner/disk.img", "the host never reads the owner's folder"),
])
def test_the_disk_is_held_to_the_folder_like_every_file(tmp_path: Path, name: str,
                                                        refusal: str) -> None:
    """The disk is the file the host writes the guest's sectors into: a manifest must not make
    it write a file outside the image, or into the owner's folder."""
    (tmp_path / "outside.img").write_bytes(b"")
    _with_disk(tmp_path / "img", name)
    (tmp_path / "img" / "owner" / "disk.img").write_bytes(b"")
    with pytest.raises(UsageError, match=f"^{re.escape(name)}: {refusal}$"):
        load_host_image(tmp_path / "img")


@pytest.mark.parametrize("where", ["disk", "ovmf", "svsm", "state"])
@pytest.mark.parametrize("name", [1, ["disk.img"], ""])
def test_a_file_name_that_is_not_a_string_is_malformed(tmp_path: Path, where: str,
                                                       name: object) -> None:
    manifest = _bundle(tmp_path)
    if where == "disk":
        manifest["disk"] = {"file": name}
    else:
        section = manifest["vtpm" if where == "state" else "firmware"]
        assert isinstance(section, dict)
        section[where] = name
    (tmp_path / "image.json").write_text(json.dumps(manifest))
    if where == "svsm" and name == "":  # an empty optional name: the manifest names none
        assert load_host_image(tmp_path).svsm is None
        return
    with pytest.raises(FormatError, match=r"^image.json: a file name is not a string: "):
        load_host_image(tmp_path)


def _paths(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every key and index path in a JSON value."""
    if isinstance(value, dict):
        items: list[tuple[object, object]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return []
    return [p for key, item in items for p in [(*path, key), *_paths(item, (*path, key))]]


def test_any_field_of_the_manifest_of_any_type_is_read_or_refused(tmp_path: Path) -> None:
    """Every field of a real image's manifest replaced by each JSON type: the host reads the
    image or refuses it with one of its errors — never an internal error."""
    build_image(tmp_path / "img", ImageSpec(kdf_cost="fast", seed=5))
    original = json.loads((tmp_path / "img" / "image.json").read_text())
    for path in _paths(original):
        for value in (None, 1, -1, "", "x", [], {}, True):
            manifest = json.loads(json.dumps(original))
            parent = manifest
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = value
            (tmp_path / "img" / "image.json").write_text(json.dumps(manifest))
            with contextlib.suppress(CvmError):
                load_host_image(tmp_path / "img")


@pytest.mark.parametrize("name", ["owner/deeper/key", "./owner/deeper/even/deeper/key"])
def test_a_file_anywhere_under_the_owners_folder_is_never_read(tmp_path: Path,
                                                              name: str) -> None:
    _bundle(tmp_path, ovmf=name)
    (tmp_path / "owner" / "deeper" / "even" / "deeper").mkdir(parents=True)
    (tmp_path / "owner" / "deeper" / "key").write_bytes(b"k")
    (tmp_path / "owner" / "deeper" / "even" / "deeper" / "key").write_bytes(b"k")
    with pytest.raises(UsageError, match=f"^{re.escape(name)}: the host never reads the "
                                         "owner's folder$"):
        load_host_image(tmp_path)


@pytest.mark.parametrize(("given", "read"), [(None, 0x00A00F11), ("0x00a10f11", 0x00A10F11)])
def test_the_vcpu_signature_is_the_manifests_or_milans(tmp_path: Path, given: str | None,
                                                       read: int) -> None:
    manifest = _bundle(tmp_path)
    if given is not None:
        manifest["vcpu_signature"] = given
    (tmp_path / "image.json").write_text(json.dumps(manifest))
    assert load_host_image(tmp_path).vcpu_signature == read


@pytest.mark.parametrize(("given", "read"), [("missing", None), (["plain", "sev-snp"],
                                                                  ("plain", "sev-snp")), ([], ())])
def test_the_modes_are_the_manifests(tmp_path: Path, given: object, read: object) -> None:
    manifest = _bundle(tmp_path)
    manifest.pop("modes", None)
    if given != "missing":
        manifest["modes"] = given
    (tmp_path / "image.json").write_text(json.dumps(manifest))
    assert load_host_image(tmp_path).modes == read


@pytest.mark.parametrize("modes", ["sev-snp", ["sev", 1], {"sev": 1}, 3])
def test_modes_that_are_not_a_list_of_names_are_not_an_image_manifest(tmp_path: Path,
                                                                      modes: object) -> None:
    manifest = _bundle(tmp_path)
    manifest["modes"] = modes
    (tmp_path / "image.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match=f"^{re.escape(str(tmp_path))}/image.json: not an "
                                          "image manifest$"):
        load_host_image(tmp_path)


@pytest.mark.parametrize(("edit", "refusal"), [
    ("no manifest", "{folder}: the image has no image.json"),
    ("not json", "{folder}/image.json: not an image manifest"),
    ("no disk", "{folder}: the image has no disk disk.img"),
    ("no firmware", "{folder}: the image has no OVMF.fd"),
    ("no varstore", "{folder}: the image has no VARS.fd"),
])
def test_what_is_missing_is_named_with_the_folder(tmp_path: Path, edit: str,
                                                  refusal: str) -> None:
    _bundle(tmp_path)
    target = {"no manifest": "image.json", "no disk": "disk.img", "no firmware": "OVMF.fd",
              "no varstore": "VARS.fd"}.get(edit)
    if target is not None:
        (tmp_path / target).unlink()
    else:
        (tmp_path / "image.json").write_text("{")
    error = FormatError if edit == "not json" else UsageError
    with pytest.raises(error, match=f"^{re.escape(refusal.format(folder=tmp_path))}$"):
        load_host_image(tmp_path)


@pytest.mark.parametrize("schema", ["cvm-image/2", "cvm-image/1"])
def test_the_manifest_schemas_cvm_writes_are_read(tmp_path: Path, schema: str) -> None:
    manifest = _bundle(tmp_path)
    manifest["schema"] = schema
    (tmp_path / "image.json").write_text(json.dumps(manifest))
    assert load_host_image(tmp_path).firmware == b"ovmf"


@pytest.mark.parametrize("schema", ["cvm-image/3", "cvm-image/9", "", None, 2, "missing"])
def test_a_manifest_schema_the_host_does_not_know_is_refused(tmp_path: Path,
                                                             schema: object) -> None:
    manifest = _bundle(tmp_path)
    if schema == "missing":
        del manifest["schema"]
        schema = None
    else:
        manifest["schema"] = schema
    (tmp_path / "image.json").write_text(json.dumps(manifest))
    refusal = (f"{tmp_path}/image.json: schema {schema!r}, expected cvm-image/2 "
               "(or cvm-image/1)")
    with pytest.raises(FormatError, match=f"^{re.escape(refusal)}$"):
        load_host_image(tmp_path)


@pytest.mark.parametrize("document", ["[]", "3", "null", '"cvm-image/2"', "\xff"])
def test_a_manifest_that_is_not_an_object_is_not_an_image_manifest(tmp_path: Path,
                                                                   document: str) -> None:
    _bundle(tmp_path)
    (tmp_path / "image.json").write_bytes(document.encode("latin-1"))
    with pytest.raises(FormatError, match=f"^{re.escape(str(tmp_path))}/image.json: not an "
                                          "image manifest$"):
        load_host_image(tmp_path)
