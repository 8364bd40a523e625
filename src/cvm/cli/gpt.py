"""``cvm gpt``: inspect GUID partition tables (UEFI 2.10 chapter 5).

``show IMAGE [--json]`` prints the disk GUID and the used partitions with their type names
(Discoverable Partitions types), and says when the backup table had to be used.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import typer

from cvm.cli.options import reading
from cvm.disk.storage import FileStorage
from cvm.formats.gpt.header import LBA_SIZE
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.formats.gpt.partition_types import type_name

app = typer.Typer(help="GUID partition tables.", no_args_is_help=True)


@app.command("show")
def show(image: Path, as_json: bool = typer.Option(False, "--json", help="JSON output.")
         ) -> None:
    """Show the partition table of IMAGE."""
    table = read_table(image)
    for warning in table.warnings:
        typer.echo(f"cvm: warning: {image}: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps(table_document(table), indent=2))
        return
    for line in table_lines(image, table):
        typer.echo(line)


def read_table(image: Path) -> PartitionTable:
    """The GPT of the disk image, read-only (a folder refused as the OS error, exit 74)."""
    if image.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory, not a disk image", str(image))
    with FileStorage(image, read_only=True) as storage, reading(image):
        return PartitionTable.parse(storage.read, storage.size())


def partitions(table: PartitionTable) -> list[dict[str, Any]]:
    """Each used partition: its number, type (GUID and name), GUID, LBAs, size, attributes,
    name."""
    return [
        {
            "number": number,
            "type_guid": str(entry.partition_type_guid),
            "type": type_name(entry.partition_type_guid),
            "unique_guid": str(entry.unique_partition_guid),
            "first_lba": entry.starting_lba,
            "last_lba": entry.ending_lba,
            "size_bytes": entry.size_in_lba * LBA_SIZE,
            "attributes": entry.attributes,
            "name": entry.name,
        }
        for number, entry in table.used()
    ]


def table_document(table: PartitionTable) -> dict[str, object]:
    return {
        "disk_guid": str(table.disk_guid), "sectors": table.total_lbas,
        "first_usable_lba": table.first_usable_lba,
        "last_usable_lba": table.last_usable_lba, "partitions": partitions(table),
        "warnings": list(table.warnings)}


def table_lines(image: Path, table: PartitionTable) -> list[str]:
    return [f"Disk {image}: {table.total_lbas} sectors of {LBA_SIZE} bytes",
            f"Disk GUID: {table.disk_guid}",
            f"{'#':>3} {'first':>10} {'last':>10} {'size':>12}  type / name",
            *(f"{part['number']:>3} {part['first_lba']:>10} {part['last_lba']:>10} "
              f"{part['size_bytes']:>12}  {part['type']} / {part['name']}"
              for part in partitions(table))]
