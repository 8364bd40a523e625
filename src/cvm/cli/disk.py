"""``cvm disk``: whole confidential disks.

``build OUT --root ROOT --boot-dir DIR --key-file F [--pbkdf ...] [--esp-size-mib 64]
[--sector-size 4096]`` writes a raw GPT disk: an ESP (FAT32, in the clear) holding the
boot-chain tree DIR, and the root partition as LUKS2, encrypted from its first byte (ROOT is a
file-system image, or a directory turned into ext4 in a temporary file). A progress bar shows
the encryption.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.progress import Progress, TaskID

from cvm.cli.luks import (
    FORCE_ITER,
    ITER_TIME,
    KEY_FILE,
    MEMORY,
    PARALLEL,
    PBKDF,
    SECTOR,
    VOLUME_KEY_FILE,
    kdf_spec,
    progress_bar,
    read_key_file,
    read_volume_key,
    sector_size_option,
)
from cvm.disk.disk_image import BuildResult, build_disk
from cvm.disk.keyslot import KdfSpec

ROOT = typer.Option(..., "--root", help="Root file-system image, or a directory.")
BOOT_DIR = typer.Option(..., "--boot-dir",
                        help="Boot-chain tree for the ESP (EFI/BOOT/BOOTX64.EFI...).")
app = typer.Typer(help="Confidential disk images: GPT, clear ESP, pre-encrypted LUKS2 root.",
                  no_args_is_help=True)


@app.command("build")
def build(
    out: Path,
    root: Path = ROOT,
    boot_dir: Path = BOOT_DIR,
    key_file: Path = KEY_FILE, pbkdf: str = PBKDF, iter_time: int | None = ITER_TIME,
    pbkdf_force_iterations: int | None = FORCE_ITER, pbkdf_memory: int = MEMORY,
    pbkdf_parallel: int = PARALLEL, sector_size: int = SECTOR,
    volume_key_file: Path | None = VOLUME_KEY_FILE,
    esp_size_mib: int = typer.Option(64, "--esp-size-mib", help="ESP size in MiB (>= 33)."),
    label: str = typer.Option("cvm-root", "--label", help="LUKS2 label."),
) -> None:
    """Write the disk image OUT (GPT, clear ESP, LUKS2 root encrypted before first boot)."""
    result = write_disk(out, root, boot_dir, key_file, kdf_spec(
        pbkdf, iter_time, pbkdf_force_iterations, pbkdf_memory, pbkdf_parallel), sector_size,
        volume_key_file, esp_size_mib, label)
    for line in built_lines(out, result):
        typer.echo(line)


def write_disk(out: Path, root: Path, boot_dir: Path, key_file: Path, kdf: KdfSpec,
               sector_size: int, volume_key_file: Path | None, esp_size_mib: int, label: str
               ) -> BuildResult:
    """The disk built with the passphrase of ``key_file``, the volume key of
    ``volume_key_file`` (a new one when not given), the ESP's size in MiB, a sector size of
    512 or 4096 and the label; its progress on a bar on stderr."""
    key = read_volume_key(volume_key_file) if volume_key_file else None
    passphrase = read_key_file(key_file)
    with progress_bar("building", 1) as bar:
        return build_disk(out, root, boot_dir, passphrase, kdf, esp_size_mib << 20,
                          sector_size_option(sector_size), label, key,
                          progress=progress_report(bar, bar.task_ids[0]))


def progress_report(bar: Progress, task: TaskID) -> Callable[[str, int, int], None]:
    """The build's progress on the bar: the encryption of a stage as done of total, a stage
    without a total by its name alone."""
    def report(stage: str, done: int, total: int) -> None:
        if total:
            bar.update(task, description=f"encrypting {stage}", completed=done, total=total)
        else:
            bar.update(task, description=stage)
    return report


def built_lines(out: Path, result: BuildResult) -> list[str]:
    """What was written: the disk's size and GUID, the ESP and the LUKS2 root."""
    layout = result.layout
    return [f"wrote {out}: {layout.disk_size} bytes, disk GUID {result.disk_guid}",
            f"  1 ESP  at {layout.esp_offset}, {layout.esp_size} bytes, "
            f"{len(result.esp_files)} files",
            f"  2 root at {layout.root_offset}, {layout.root_size} bytes, "
            f"LUKS2 UUID {result.luks_uuid}"]
