"""cvm's initramfs: a newc cpio archive whose manifest says what the initramfs stage does.

The archive (:mod:`cvm.formats.cpio`) holds ``/init`` (a shell script describing the stage, for
a human reader), ``/etc/os-release`` and ``/etc/cvm/initramfs.json``, the manifest the guest's
initramfs stage acts on (docs/image-bundle.md):

.. code-block:: json

   {"schema": "cvm-initramfs/1",
    "root": {"luks_uuid": "...", "partition_guid": "...", "mapper": "root",
             "token_type": "systemd-tpm2", "filesystem": "cvm-filestore/2"},
    "pcr_signature": "uki:.pcrsig" | null,
    "workload": {"store": "cvm-filestore/2", "data_dir": "/srv/data"}}

Parsing is strict: unknown or missing keys and wrong types are FormatErrors naming the field.
The build writes ``cvm-filestore/2``; ``cvm-filestore/1`` (an image built before version 2) is
still accepted, the same in both places, and kept as read.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from cvm.errors import FormatError
from cvm.formats.cpio import CpioArchive, CpioEntry

SCHEMA = "cvm-initramfs/1"
MANIFEST_PATH = "etc/cvm/initramfs.json"
FILESTORE = "cvm-filestore/2"
FILESTORES = ("cvm-filestore/1", FILESTORE)  # what the guest opens
TOKEN_TYPE = "systemd-tpm2"
PCR_SIGNATURE_IN_UKI = "uki:.pcrsig"
INIT_SCRIPT = """#!/bin/sh
# cvm initramfs: find the LUKS2 root named in /etc/cvm/initramfs.json, unseal its key
# through the vTPM (systemd-tpm2 token), open it with dm-crypt as /dev/mapper/root,
# mount the cvm-filestore and start the workload.
exec /usr/lib/cvm/initramfs-stage /etc/cvm/initramfs.json
"""


def _object(value: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"initramfs manifest: {where} is not an object")
    if set(value) != keys:
        extra, missing = sorted(set(value) - keys), sorted(keys - set(value))
        raise FormatError(f"initramfs manifest: {where} has unknown keys {extra} or misses "
                          f"{missing}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise FormatError(f"initramfs manifest: {where} is not a non-empty string")
    return value


def _uuid(value: Any, where: str) -> str:
    text = _text(value, where)
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise FormatError(f"initramfs manifest: {where} is not a UUID") from None


@dataclass(frozen=True)
class InitramfsManifest:
    """What the initramfs stage opens and how."""

    luks_uuid: str
    partition_guid: str
    pcr_signature: str | None = None
    mapper: str = "root"
    data_dir: str = "/srv/data"
    filesystem: str = FILESTORE

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "root": {"luks_uuid": self.luks_uuid, "partition_guid": self.partition_guid,
                     "mapper": self.mapper, "token_type": TOKEN_TYPE,
                     "filesystem": self.filesystem},
            "pcr_signature": self.pcr_signature,
            "workload": {"store": self.filesystem, "data_dir": self.data_dir},
        }

    @classmethod
    def from_json(cls, document: Any) -> InitramfsManifest:
        top = _object(document, "the manifest", {"schema", "root", "pcr_signature", "workload"})
        if top["schema"] != SCHEMA:
            raise FormatError(f"initramfs manifest: schema {top['schema']!r}, expected {SCHEMA}")
        root = _object(top["root"], "root", {"luks_uuid", "partition_guid", "mapper",
                                             "token_type", "filesystem"})
        if root["token_type"] != TOKEN_TYPE or root["filesystem"] not in FILESTORES:
            raise FormatError("initramfs manifest: root.token_type or root.filesystem is not "
                              f"{TOKEN_TYPE} / one of {', '.join(FILESTORES)}")
        workload = _object(top["workload"], "workload", {"store", "data_dir"})
        if workload["store"] != root["filesystem"]:
            raise FormatError("initramfs manifest: workload.store is not root.filesystem")
        signature = top["pcr_signature"]
        if signature not in (None, PCR_SIGNATURE_IN_UKI):
            raise FormatError(f"initramfs manifest: pcr_signature must be null or "
                              f"{PCR_SIGNATURE_IN_UKI!r}")
        return cls(_uuid(root["luks_uuid"], "root.luks_uuid"),
                   _uuid(root["partition_guid"], "root.partition_guid"), signature,
                   _text(root["mapper"], "root.mapper"),
                   _text(workload["data_dir"], "workload.data_dir"), root["filesystem"])

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n").encode()


def build_initramfs(manifest: InitramfsManifest, os_release: str) -> bytes:
    """The newc archive holding ``/init``, ``/etc/os-release`` and the manifest."""
    entries = (
        CpioEntry.directory(".", ino=1),
        CpioEntry.file("init", INIT_SCRIPT.encode(), 0o755, ino=2),
        CpioEntry.directory("etc", ino=3),
        CpioEntry.file("etc/os-release", os_release.encode(), ino=4),
        CpioEntry.directory("etc/cvm", ino=5),
        CpioEntry.file(MANIFEST_PATH, manifest.to_bytes(), ino=6),
    )
    return CpioArchive(entries).to_bytes()


def parse_initramfs(data: bytes) -> tuple[CpioArchive, InitramfsManifest]:
    """The archive and its manifest; FormatError if either is malformed or missing."""
    archive = CpioArchive.parse(data)
    entry = archive.get(MANIFEST_PATH)
    if entry is None:
        raise FormatError(f"initramfs: no /{MANIFEST_PATH}")
    try:
        document = json.loads(entry.data)
    except (ValueError, UnicodeDecodeError):
        raise FormatError(f"initramfs: /{MANIFEST_PATH} is not JSON") from None
    return archive, InitramfsManifest.from_json(document)
