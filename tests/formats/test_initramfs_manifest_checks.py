"""The initramfs manifest's checks one by one, each refusal by its message naming the field:
the keys of each object, the schema, the token type and file store, the PCR signature's place,
the UUIDs and the strings — and the archive around it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from cvm.errors import FormatError
from cvm.formats.cpio import CpioArchive, CpioEntry
from cvm.formats.initramfs import (
    INIT_SCRIPT,
    MANIFEST_PATH,
    InitramfsManifest,
    build_initramfs,
    parse_initramfs,
)

LUKS = "0b6f1a48-7b3e-4d6c-9a11-3c5e2f8d9a01"
PART = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
MANIFEST = InitramfsManifest(LUKS, PART, "uki:.pcrsig", "cryptroot", "/var/lib/app")


def _document(change: Callable[[dict[str, Any]], object] = lambda d: None) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(MANIFEST.to_bytes())
    change(document)
    return document


def _refusal(document: Any) -> str:
    with pytest.raises(FormatError) as refused:
        InitramfsManifest.from_json(document)
    assert type(refused.value) is FormatError
    return str(refused.value)


def test_the_manifest_as_written_and_read() -> None:
    assert MANIFEST.to_json() == {
        "schema": "cvm-initramfs/1",
        "root": {"luks_uuid": LUKS, "partition_guid": PART, "mapper": "cryptroot",
                 "token_type": "systemd-tpm2", "filesystem": "cvm-filestore/2"},
        "pcr_signature": "uki:.pcrsig",
        "workload": {"store": "cvm-filestore/2", "data_dir": "/var/lib/app"}}
    assert InitramfsManifest.from_json(_document()) == MANIFEST
    text = MANIFEST.to_bytes().decode()
    assert text.endswith("}\n") and text.startswith('{\n "pcr_signature"')
    unsigned = InitramfsManifest(LUKS, PART)
    assert InitramfsManifest.from_json(json.loads(unsigned.to_bytes())) == unsigned
    assert (unsigned.pcr_signature, unsigned.mapper, unsigned.data_dir) == (
        None, "root", "/srv/data")


def test_uuids_are_read_in_their_canonical_form() -> None:
    upper = _document(lambda d: d["root"].update(luks_uuid=LUKS.upper(),
                                                  partition_guid="{" + PART + "}"))
    parsed = InitramfsManifest.from_json(upper)
    assert (parsed.luks_uuid, parsed.partition_guid) == (LUKS, PART)


def test_each_object_has_exactly_its_keys() -> None:
    assert _refusal([]) == "initramfs manifest: the manifest is not an object"
    assert _refusal(_document(lambda d: d.update(extra=1))) == (
        "initramfs manifest: the manifest has unknown keys ['extra'] or misses []")
    assert _refusal(_document(lambda d: d.pop("pcr_signature"))) == (
        "initramfs manifest: the manifest has unknown keys [] or misses ['pcr_signature']")
    assert _refusal(_document(lambda d: d.update(root="x"))) == (
        "initramfs manifest: root is not an object")
    assert _refusal(_document(lambda d: (d["root"].pop("mapper"),
                                         d["root"].update(b=1, a=2)))) == (
        "initramfs manifest: root has unknown keys ['a', 'b'] or misses ['mapper']")
    assert _refusal(_document(lambda d: d.update(workload=None))) == (
        "initramfs manifest: workload is not an object")
    assert _refusal(_document(lambda d: d["workload"].pop("data_dir"))) == (
        "initramfs manifest: workload has unknown keys [] or misses ['data_dir']")


def test_the_fixed_values() -> None:
    assert _refusal(_document(lambda d: d.update(schema="cvm-initramfs/2"))) == (
        "initramfs manifest: schema 'cvm-initramfs/2', expected cvm-initramfs/1")
    fixed = ("initramfs manifest: root.token_type or root.filesystem is not "
             "systemd-tpm2 / one of cvm-filestore/1, cvm-filestore/2")
    assert _refusal(_document(lambda d: d["root"].update(token_type="clevis"))) == fixed
    assert _refusal(_document(lambda d: d["root"].update(filesystem="ext4"))) == fixed
    assert _refusal(_document(lambda d: d["workload"].update(store="ext4"))) == (
        "initramfs manifest: workload.store is not root.filesystem")
    assert _refusal(_document(lambda d: d["workload"].update(store="cvm-filestore/1"))) == (
        "initramfs manifest: workload.store is not root.filesystem")
    for place in ("/boot/sig.json", "", "uki:.pcrpkey"):
        assert _refusal(_document(lambda d, place=place: d.update(pcr_signature=place))) == (
            "initramfs manifest: pcr_signature must be null or 'uki:.pcrsig'")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("luks_uuid", "not-a-uuid", "root.luks_uuid is not a UUID"),
    ("luks_uuid", "", "root.luks_uuid is not a non-empty string"),
    ("luks_uuid", 5, "root.luks_uuid is not a non-empty string"),
    ("partition_guid", PART[:-1], "root.partition_guid is not a UUID"),
    ("partition_guid", None, "root.partition_guid is not a non-empty string"),
    ("mapper", "", "root.mapper is not a non-empty string"),
    ("mapper", ["root"], "root.mapper is not a non-empty string"),
])
def test_the_root_fields(field: str, value: Any, message: str) -> None:
    assert _refusal(_document(lambda d: d["root"].update({field: value}))) == (
        f"initramfs manifest: {message}")


def test_the_data_directory() -> None:
    assert _refusal(_document(lambda d: d["workload"].update(data_dir=""))) == (
        "initramfs manifest: workload.data_dir is not a non-empty string")


def test_the_archive_holds_init_os_release_and_the_manifest() -> None:
    archive, manifest = parse_initramfs(build_initramfs(MANIFEST, "ID=cvm\n"))
    assert manifest == MANIFEST
    assert [(e.name, e.mode, e.ino) for e in archive.entries] == [
        (".", 0o40755, 1), ("init", 0o100755, 2), ("etc", 0o40755, 3),
        ("etc/os-release", 0o100644, 4), ("etc/cvm", 0o40755, 5),
        ("etc/cvm/initramfs.json", 0o100644, 6)]
    assert [e.data for e in archive.entries] == [
        b"", INIT_SCRIPT.encode(), b"", b"ID=cvm\n", b"", MANIFEST.to_bytes()]
    assert MANIFEST_PATH == "etc/cvm/initramfs.json"


def test_an_archive_without_a_readable_manifest_is_refused() -> None:
    def refusal(*entries: CpioEntry) -> str:
        with pytest.raises(FormatError) as refused:
            parse_initramfs(CpioArchive(entries).to_bytes())
        return str(refused.value)

    assert refusal(CpioEntry.file("init", b"")) == "initramfs: no /etc/cvm/initramfs.json"
    for data in (b"{", b"\xff\xfe", b""):
        assert refusal(CpioEntry.file("./etc/cvm/initramfs.json", data)) == (
            "initramfs: /etc/cvm/initramfs.json is not JSON")
    assert refusal(CpioEntry.file("etc/cvm/initramfs.json", b"[]")) == (
        "initramfs manifest: the manifest is not an object")
