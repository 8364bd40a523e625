"""``cvm pcr``: predict the PCR values a boot will produce, from its files, without booting.

The inputs are an ESP as a directory tree (``--esp``), the OVMF varstore (``--varstore``) and
optionally the raw disk whose GPT the firmware measures (``--disk``); ``--file`` adds or
replaces single ESP files (a new grub.cfg, another kernel); ``--event-log`` also runs the
emulated boot, checks that it gives the predicted PCRs, and writes its event log (readable by
``cvm eventlog`` and ``tpm2_eventlog``). See :mod:`cvm.image.pcr_prediction`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import typer

from cvm.errors import InternalError, UsageError
from cvm.formats.tcg.algorithm import algorithm_by_name
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import DEFAULT_LOADER, FirmwareSettings, GptDisk
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.image.pcr_prediction import predict

app = typer.Typer(help="Predict PCR values of a boot chain.", no_args_is_help=True)
GPT_READ_BYTES = 1 << 20


def _files(esp: Path, extra: list[str]) -> EspFiles:
    files = dict(EspFiles.from_directory(esp).items())
    for item in extra:
        target, sep, local = item.partition("=")
        if not sep or not target or not local:
            raise UsageError(f"--file {item!r}: expected ESP_PATH=LOCAL_FILE")
        for existing in [k for k in files if k.lower() == "/" + target.strip("/").lower()]:
            del files[existing]
        files["/" + target.strip("/")] = Path(local).read_bytes()
    return EspFiles(files)


def _pcr_list(text: str) -> list[int]:
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UsageError(f"--pcrs {text!r}: expected comma-separated PCR numbers") from None
    if any(not 0 <= p <= 23 for p in values):
        raise UsageError(f"--pcrs {text!r}: PCRs are 0..23")
    return values


def _write_emulated_log(
    chain: BootChain, banks: tuple[str, ...], predicted: Callable[[str], dict[int, bytes]],
    path: Path,
) -> None:
    """Boot the chain, check the PCRs equal the prediction, write the log."""
    pcrs = SoftwarePcrBank(banks)
    log = chain.run(pcrs).log
    for name in banks:
        for pcr, value in predicted(name).items():
            if pcrs.read(pcr, name) != value:
                raise InternalError(f"emulated boot and prediction differ on {name} PCR {pcr}")
    path.write_bytes(log.to_bytes())


@app.command(name="predict")
def predict_command(
    esp: Path = typer.Option(..., "--esp", help="The ESP as a directory tree."),
    varstore: Path = typer.Option(..., "--varstore", help="The OVMF varstore (OVMF_VARS*.fd)."),
    disk: Path | None = typer.Option(None, "--disk", help="Raw disk image with the GPT."),
    partition: int = typer.Option(1, "--partition", help="GPT partition number of the ESP."),
    file: list[str] = typer.Option(
        [], "--file", help="ESP_PATH=LOCAL_FILE: add or replace one ESP file (repeatable)."
    ),
    loader: str = typer.Option(DEFAULT_LOADER, "--loader", help="The first image's ESP path."),
    bank: list[str] = typer.Option(
        [], "--bank", help="PCR bank (repeatable); default sha256."
    ),
    pcrs: str = typer.Option("", "--pcrs", help="Comma-separated PCRs to print; default all."),
    failed_boot_attempts: int = typer.Option(
        0, "--failed-boot-attempts", help="Boot options the firmware tries first (empty CD-ROM)."
    ),
    event_log: Path | None = typer.Option(
        None, "--event-log",
        help="Also run the emulated boot and write its TCG event log to this file.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Compute the PCRs booting these files would give (firmware, shim, GRUB or UKI, Linux)."""
    banks = tuple(bank) or ("sha256",)
    for name in banks:
        algorithm_by_name(name)
    if failed_boot_attempts < 0:
        raise UsageError("--failed-boot-attempts must not be negative")
    gpt = None
    if disk is not None:
        with disk.open("rb") as handle:
            gpt = GptDisk.from_disk(handle.read(GPT_READ_BYTES), partition)
    chain = BootChain(
        _files(esp, file), Varstore.parse(varstore.read_bytes()), gpt,
        FirmwareSettings(failed_boot_attempts=failed_boot_attempts), loader,
    )
    prediction = predict(chain, banks)
    if event_log is not None:
        _write_emulated_log(chain, banks, prediction.values, event_log)
    wanted = _pcr_list(pcrs) if pcrs else None
    values = {
        name: {pcr: value for pcr, value in prediction.values(name).items()
               if wanted is None or pcr in wanted}
        for name in banks
    }
    if as_json:
        typer.echo(json.dumps(
            {name: {str(p): v.hex() for p, v in pcr_values.items()}
             for name, pcr_values in values.items()}, indent=2))
        return
    for name, pcr_values in values.items():
        typer.echo(f"{name}:")
        for pcr, value in pcr_values.items():
            count = len(prediction.measurements.get(pcr, []))
            typer.echo(f"  {pcr:2d}: {value.hex()}  ({count} measurements)")
