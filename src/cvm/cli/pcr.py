"""``cvm pcr``: predict the PCR values a boot will produce, without booting; compare boots.

``predict DISK --varstore VARS`` reads the GPT and the ESP's files from the raw disk image (or
takes the ESP as a folder with ``--esp``); ``--profile`` names the VM's device set in QEMU's
terms (:mod:`cvm.image.vm_profile`), which decides PCR 1, PCR 4's failed boot attempts and the
device paths; ``--firmware-log`` takes the firmware's own measurements (PCR 0, option ROMs)
from a reference log; every PCR that cannot be computed is reported as unknown, with the
reason (:mod:`cvm.image.pcr_report`). ``--event-log`` also runs the emulated boot and writes
its log. ``diff PREDICTED REAL`` compares two logs event by event (:mod:`cvm.image.pcr_diff`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sized
from pathlib import Path

import typer

from cvm.cli.options import parse_file, reading, refuse_unused
from cvm.disk.storage import FileStorage
from cvm.errors import FormatError, InternalError, UsageError
from cvm.files import write_output
from cvm.formats.fat import FatVolume
from cvm.formats.gpt.header import LBA_SIZE
from cvm.formats.gpt.partition_entry import ENTRY_SIZE, PartitionEntry
from cvm.formats.tcg.algorithm import algorithm_by_name
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import DEFAULT_LOADER, GptDisk
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.image.pcr_diff import DEFAULT_PCRS, PcrDifference, diff
from cvm.image.pcr_prediction import predict
from cvm.image.pcr_report import PcrStatus, apply_firmware_log, pcr_report
from cvm.image.vm_profile import PROFILES, VmProfile, profile_named

app = typer.Typer(help="Predict PCR values of a boot chain.", no_args_is_help=True)
GPT_READ_BYTES = 1 << 20
DEFAULT_ESP_PARTITION = 1


def _override(esp: EspFiles, extra: list[str]) -> EspFiles:
    files = dict(esp.items())
    for item in extra:
        target, sep, local = item.partition("=")
        if not sep or not target or not local:
            raise UsageError(f"--file {item!r}: expected ESP_PATH=LOCAL_FILE")
        for existing in [k for k in files if k.lower() == "/" + target.strip("/").lower()]:
            del files[existing]
        files["/" + target.strip("/")] = Path(local).read_bytes()
    return EspFiles(files)


def _pcr_list(text: str) -> list[int]:
    """``--pcrs``: PCR numbers 0 to 23, comma-separated; at least one (an empty list would
    print or compare nothing and say so as a success)."""
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UsageError(f"--pcrs {text!r}: expected comma-separated PCR numbers") from None
    if not values:
        raise UsageError(f"--pcrs {text!r}: expected comma-separated PCR numbers")
    if any(not 0 <= p <= 23 for p in values):
        raise UsageError(f"--pcrs {text!r}: PCRs are 0..23")
    return values


def _write_emulated_log(
    chain: BootChain, banks: tuple[str, ...], predicted: Callable[[str], dict[int, bytes]],
    path: Path, from_firmware_log: tuple[int, ...],
) -> None:
    """Boot the chain, check the PCRs equal the prediction (but those the prediction took from
    the firmware's log, which the emulated firmware does not replay), write the log."""
    pcrs = SoftwarePcrBank(banks)
    log = chain.run(pcrs).log
    for name in banks:
        for pcr, value in predicted(name).items():
            if pcr not in from_firmware_log and pcrs.read(pcr, name) != value:
                raise InternalError(f"emulated boot and prediction differ on {name} PCR {pcr}")
    write_output(path, log.to_bytes())


def _esp_from_disk(disk: Path, partition: int) -> tuple[EspFiles, GptDisk]:
    """The GPT and the ESP's files, read from a raw disk image."""
    with FileStorage(disk, read_only=True) as storage, reading(disk):
        gpt = GptDisk.from_disk(storage.read(0, min(GPT_READ_BYTES, storage.size())), partition)
        entry = PartitionEntry.from_bytes(gpt.entry[:ENTRY_SIZE])
        offset = entry.starting_lba * LBA_SIZE
        size = entry.size_in_lba * LBA_SIZE
        if offset + size > storage.size():
            raise FormatError(f"{disk}: partition {partition} runs past the end of the disk")

        def read(at: int, length: int) -> bytes:
            if at < 0 or at + length > size:
                raise FormatError(f"{disk}: partition {partition}: read past its end")
            return storage.read(offset + at, length)

        files = FatVolume(read, size).files()
    return EspFiles(files), gpt


@app.command(name="predict")
def predict_command(
    disk_image: Path | None = typer.Argument(
        None, metavar="[DISK]", help="Raw disk image: its GPT and the ESP's files are read."),
    varstore: Path = typer.Option(..., "--varstore", help="The OVMF varstore (OVMF_VARS*.fd)."),
    esp: Path | None = typer.Option(None, "--esp", help="The ESP as a directory tree instead."),
    disk: Path | None = typer.Option(None, "--disk", help="Raw disk image with the GPT only."),
    partition: int | None = typer.Option(
        None, "--partition", help="GPT partition number of the ESP; default 1."),
    profile: str = typer.Option(
        "q35", "--profile", help=f"The VM's device set: {', '.join(PROFILES)}."),
    firmware_log: Path | None = typer.Option(
        None, "--firmware-log",
        help="Event log of a boot of the same VM configuration: PCR 0 (and option ROMs) from it."),
    file: list[str] = typer.Option(
        [], "--file", help="ESP_PATH=LOCAL_FILE: add or replace one ESP file (repeatable)."
    ),
    loader: str = typer.Option(DEFAULT_LOADER, "--loader", help="The first image's ESP path."),
    bank: list[str] = typer.Option(
        [], "--bank", help="PCR bank (repeatable); default sha1 and sha256."
    ),
    pcrs: str = typer.Option("", "--pcrs", help="Comma-separated PCRs to print; default 0-15."),
    event_log: Path | None = typer.Option(
        None, "--event-log",
        help="Also run the emulated boot and write its TCG event log to this file.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Compute the PCRs booting these files would give; say which ones cannot be known."""
    banks = chosen_banks(bank)
    machine = profile_named(profile)
    files, gpt = boot_files(disk_image, esp, disk, partition, file)
    reference = (parse_file(firmware_log, "--firmware-log", EventLog.parse)
                 if firmware_log else None)
    store = parse_file(varstore, "--varstore", Varstore.parse)
    chain = BootChain(
        files, machine.with_boot_options(store), gpt,
        machine.settings(), loader,
    )
    prediction = predict(chain, banks)
    replaced = firmware_pcrs(machine) if reference is not None else ()
    if reference is not None:
        apply_firmware_log(prediction, reference, replaced)
    if event_log is not None:
        _write_emulated_log(chain, banks, prediction.values, event_log, replaced)
    wanted = wanted_pcrs(pcrs)
    statuses = [s for s in pcr_report(prediction, machine, reference,
                                      str(firmware_log or "")) if s.pcr in wanted]
    if as_json:
        typer.echo(json.dumps(predict_json(banks, machine.name, statuses), indent=2))
        return
    for line in predict_lines(banks, machine.name, machine.qemu_args, statuses,
                              prediction.measurements):
        typer.echo(line)


def chosen_banks(bank: list[str]) -> tuple[str, ...]:
    """``--bank``: each a bank the event log knows; sha1 and sha256 when none is given."""
    banks = tuple(bank) or ("sha1", "sha256")
    for name in banks:
        algorithm_by_name(name)
    return banks


def _esp_partition(partition: int | None) -> int:
    return DEFAULT_ESP_PARTITION if partition is None else partition


def boot_files(disk_image: Path | None, esp: Path | None, disk: Path | None,
               partition: int | None, file: list[str]) -> tuple[EspFiles, GptDisk | None]:
    """The ESP's files (with ``--file``'s) and the GPT: both from DISK, or the files from
    ``--esp`` and the GPT, if any, from DISK or ``--disk``; DISK and ``--disk`` not both.
    ``--partition`` (default 1) names the ESP in a GPT: with ``--esp`` and no disk there is no
    GPT to read it from, and it is refused."""
    if disk_image is not None and disk is not None:
        raise UsageError("give the disk either as DISK or as --disk, not both")
    if disk_image is None and esp is None:
        raise UsageError("give the disk image (DISK) or the ESP as a folder (--esp)")
    if esp is None:
        assert disk_image is not None
        files, gpt = _esp_from_disk(disk_image, _esp_partition(partition))
        return _override(files, file), gpt
    source = disk_image or disk
    refuse_unused("--esp without a disk (no GPT to find the partition in)",
                  {"--partition": source is None and partition is not None})
    table = None
    if source is not None:
        with source.open("rb") as handle, reading(source):
            table = GptDisk.from_disk(handle.read(GPT_READ_BYTES),
                                      _esp_partition(partition))
    return _override(EspFiles.from_directory(esp), file), table


def firmware_pcrs(machine: VmProfile) -> tuple[int, ...]:
    """The PCRs a firmware log settles: 0, and 2 for a profile whose NIC's option ROM is
    measured."""
    return (0, 2) if machine.measures_option_rom else (0,)


def wanted_pcrs(pcrs: str) -> set[int]:
    """``predict --pcrs``: the PCRs to print, 0 to 15 by default."""
    return set(_pcr_list(pcrs)) if pcrs else set(range(16))


def predict_json(banks: tuple[str, ...], profile: str, statuses: list[PcrStatus]
                 ) -> dict[str, object]:
    """Each bank's values (None when unknown), the profile, where each known value comes from
    and why each unknown one is, with what settles it."""
    document: dict[str, object] = {
        name: {str(s.pcr): None if s.values is None else s.values[name].hex()
               for s in statuses}
        for name in banks
    }
    document["profile"] = profile
    document["sources"] = {str(s.pcr): s.source for s in statuses if s.values is not None}
    document["unknown"] = {str(s.pcr): {"reason": s.reason, "settle": s.settle}
                           for s in statuses if s.values is None}
    return document


def predict_lines(banks: tuple[str, ...], profile: str, qemu_args: str,
                  statuses: list[PcrStatus], measurements: Mapping[int, Sized]) -> list[str]:
    """``predict``'s text: the profile, then per bank each PCR's value, its number of
    measurements and its source, or ``unknown`` with the reason and what settles it."""
    lines = [f"VM profile {profile}: {qemu_args}"]
    for name in banks:
        lines.append(f"{name}:")
        for status in statuses:
            if status.values is None:
                lines.append(f"  {status.pcr:2d}: unknown — {status.reason}; "
                             f"settle it with {status.settle}")
                continue
            count = len(measurements.get(status.pcr, []))
            lines.append(f"  {status.pcr:2d}: {status.values[name].hex()}  ({count} "
                         f"measurements; {status.source})")
    return lines


@app.command(name="diff")
def diff_command(
    predicted: Path = typer.Argument(..., help="The predicted boot's event log (--event-log)."),
    real: Path = typer.Argument(..., help="The real boot's event log."),
    pcrs: str = typer.Option(
        "", "--pcrs", help="Comma-separated PCRs to compare; default 1-9 and 11-15."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Event by event, the first difference of each PCR and its cause; exit 1 if any."""
    chosen = diff_pcrs(pcrs)
    differences = diff(parse_file(predicted, "", EventLog.parse),
                       parse_file(real, "", EventLog.parse), chosen)
    if as_json:
        typer.echo(json.dumps([d.to_json() for d in differences], indent=2))
    else:
        for line in diff_lines(chosen, differences):
            typer.echo(line)
    if differences:
        raise typer.Exit(1)


def diff_pcrs(pcrs: str) -> tuple[int, ...]:
    """``diff --pcrs``: the PCRs to compare, 1-9 and 11-15 by default."""
    return tuple(_pcr_list(pcrs)) if pcrs else DEFAULT_PCRS


def diff_lines(chosen: tuple[int, ...], differences: list[PcrDifference]) -> list[str]:
    """``diff``'s text: each PCR's first difference, where it is in each log and its cause;
    the PCRs compared when none differs."""
    if not differences:
        return [f"PCRs {', '.join(map(str, chosen))}: the same events, the same digests"]
    lines = []
    for difference in differences:
        where = (f"predicted event {difference.predicted_index}"
                 if difference.predicted_index is not None else "no predicted event")
        real_where = (f"real event {difference.real_index}"
                      if difference.real_index is not None else "no real event")
        lines.append(f"PCR {difference.pcr}: {where}, {real_where}: {difference.cause}")
    return lines
