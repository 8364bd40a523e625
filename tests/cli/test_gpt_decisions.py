"""``cvm gpt show``, one decision at a time: a folder refused, the disk read without writing,
each used partition described, the backup table's warning on stderr, the lines printed."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from cvm.cli import gpt
from cvm.cli.main import execute
from cvm.formats.gpt import partition_types
from cvm.formats.gpt.header import LBA_SIZE
from cvm.formats.gpt.partition_entry import PartitionEntry
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.wire import Guid

DISK_GUID = Guid.parse("7e5a1b3c-2d4f-4a6b-8c9d-0e1f2a3b4c5d")
ESP_GUID = Guid.parse("1c2b3a49-5867-4e8d-9a0b-c1d2e3f40516")
ROOT_GUID = Guid.parse("2c2b3a49-5867-4e8d-9a0b-c1d2e3f40516")
SIZE = 8 << 20


def _disk(path: Path, *, break_primary: bool = False) -> Path:
    entries = [PartitionEntry(partition_types.ESP, ESP_GUID, 2048, 4095, name="EFI System"),
               PartitionEntry(partition_types.LINUX_DATA, ROOT_GUID, 4096, 8191, 1 << 63,
                              name="root")]
    table = PartitionTable.create(SIZE // LBA_SIZE, entries, DISK_GUID)
    with path.open("wb") as handle:
        handle.truncate(SIZE)
        for offset, data in table.blocks():
            handle.seek(offset)
            handle.write(data)
        if break_primary:
            handle.seek(LBA_SIZE + 0x10)
            handle.write(b"\xff\xff\xff\xff")
    return path


def test_a_folder_is_refused_as_the_os_error(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError) as refused:
        gpt.read_table(tmp_path)
    assert refused.value.filename == str(tmp_path) and refused.value.errno == errno.EISDIR
    assert refused.value.strerror == "Is a directory, not a disk image"


def test_the_disk_is_read_without_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    disk = _disk(tmp_path / "disk.img")
    opened: list[dict[str, object]] = []
    real = gpt.FileStorage

    def recording(path: Path, **options: object) -> object:
        opened.append(options)
        return real(path, **options)  # type: ignore[arg-type]
    monkeypatch.setattr(gpt, "FileStorage", recording)
    assert gpt.read_table(disk).disk_guid == DISK_GUID
    assert opened == [{"read_only": True}]


def test_each_used_partition_is_described(tmp_path: Path) -> None:
    table = gpt.read_table(_disk(tmp_path / "disk.img"))
    assert gpt.partitions(table) == [
        {"number": 1, "type_guid": str(partition_types.ESP), "type": "EFI System (EF00)",
         "unique_guid": str(ESP_GUID), "first_lba": 2048, "last_lba": 4095,
         "size_bytes": 2048 * 512, "attributes": 0, "name": "EFI System"},
        {"number": 2, "type_guid": str(partition_types.LINUX_DATA),
         "type": partition_types.type_name(partition_types.LINUX_DATA),
         "unique_guid": str(ROOT_GUID), "first_lba": 4096, "last_lba": 8191,
         "size_bytes": 4096 * 512, "attributes": 1 << 63, "name": "root"}]
    document = gpt.table_document(table)
    assert document == {"disk_guid": str(DISK_GUID), "sectors": SIZE // 512,
                        "first_usable_lba": table.first_usable_lba,
                        "last_usable_lba": table.last_usable_lba,
                        "partitions": gpt.partitions(table), "warnings": []}
    assert gpt.table_lines(Path("d.img"), table) == [
        f"Disk d.img: {SIZE // 512} sectors of 512 bytes", f"Disk GUID: {DISK_GUID}",
        "  #      first       last         size  type / name",
        "  1       2048       4095      1048576  EFI System (EF00) / EFI System",
        f"  2       4096       8191      2097152  "
        f"{partition_types.type_name(partition_types.LINUX_DATA)} / root"]


def test_the_backup_table_is_said_on_stderr(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    disk = _disk(tmp_path / "disk.img", break_primary=True)
    assert execute(["gpt", "show", str(disk), "--json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["warnings"] and document["disk_guid"] == str(DISK_GUID)
    assert captured.err == "".join(f"cvm: warning: {disk}: {w}\n"
                                   for w in document["warnings"])
    assert execute(["gpt", "show", str(disk)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == f"Disk {disk}: {SIZE // 512} sectors of 512 bytes"
    assert captured.err.startswith(f"cvm: warning: {disk}: primary GPT invalid")


def test_show_on_a_folder_is_exit_74(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["gpt", "show", str(tmp_path)]) == 74
    assert capsys.readouterr().err == (
        f"cvm: error: Is a directory, not a disk image: {tmp_path}\n")
