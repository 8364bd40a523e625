"""``cvm eventlog``: show and replay TCG PC Client event logs.

``show`` decodes every record (PFP 1.05 r23 event types, see :mod:`cvm.formats.tcg`; a record
whose data does not fit its type is shown as malformed, not refused) and flags records whose
digest does not cover their event data (:mod:`cvm.formats.tcg.event_digest`);
``replay`` extends the digests into fresh PCRs and prints the values a TPM would hold.
Logs are read as files (``/sys/kernel/security/tpm0/binary_bios_measurements`` copies).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cvm.errors import FormatError
from cvm.formats.tcg.algorithm import ALGORITHMS_BY_ID, algorithm_by_name
from cvm.formats.tcg.event_data import EventData, SpecIdHeader, decode_or_malformed
from cvm.formats.tcg.event_digest import check_event
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import event_type_name
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.replay import replay

app = typer.Typer(help="Show and replay TCG event logs.", no_args_is_help=True)

LOG_ARGUMENT = typer.Argument(..., help="The binary event log (crypto-agile or legacy SHA-1).")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of text.")


def _bank_name(alg_id: int) -> str:
    known = ALGORITHMS_BY_ID.get(alg_id)
    return known.name if known is not None else f"alg_{alg_id:#06x}"


def _read(path: Path) -> EventLog:
    data = path.read_bytes()
    try:
        return EventLog.parse(data)
    except FormatError as error:
        raise FormatError(f"{path}: {error}") from None


def _digest_check(event: PcrEvent) -> str:
    checked = check_event(event)
    return "not checkable" if checked is None else ("ok" if checked else "mismatch")


def _decoded(log: EventLog, number: int, event: PcrEvent) -> EventData:
    """The event data; the header record shows the log's Spec ID event as parsed (vendorInfo
    included even where a non-conforming log stores it after the record)."""
    if number == 0 and log.spec_id is not None:
        return SpecIdHeader(log.spec_id)
    return decode_or_malformed(event.event_type, event.event)


def _event_json(log: EventLog, number: int, event: PcrEvent) -> dict[str, object]:
    return {
        "number": number,
        "pcr": event.pcr_index,
        "event_type": event.event_type,
        "event_type_name": event_type_name(event.event_type),
        "digests": {_bank_name(alg): digest.hex() for alg, digest in event.digests},
        "event_size": len(event.event),
        "digest_check": _digest_check(event),
        "event": _decoded(log, number, event).to_json(),
    }


def _all_events(log: EventLog) -> list[PcrEvent]:
    header = log.header_event()
    return ([header] if header is not None else []) + list(log.events)


@app.command()
def show(log_path: Path = LOG_ARGUMENT, as_json: bool = JSON_OPTION) -> None:
    """Decode and print every event of the log."""
    log = _read(log_path)
    if as_json:
        typer.echo(json.dumps(log_document(log), indent=2))
        return
    for line in show_lines(log):
        typer.echo(line)


def log_document(log: EventLog) -> dict[str, object]:
    """``show --json``: the log's format, its banks, every record decoded (the header too)."""
    return {
        "format": "crypto-agile" if log.is_crypto_agile else "sha1",
        "banks": [_bank_name(a) for a in log.bank_ids],
        "events": [_event_json(log, n, e) for n, e in enumerate(_all_events(log))],
    }


def show_lines(log: EventLog) -> list[str]:
    """``show``'s text: the format, banks and count; per record its number, PCR, type, the
    start of its digest in the log's last bank (else its first) and its data, flagged when the
    digest does not cover the data."""
    events = _all_events(log)
    kind = "crypto-agile" if log.is_crypto_agile else "legacy SHA-1"
    banks = ", ".join(_bank_name(a) for a in log.bank_ids)
    lines = [f"{kind} event log, banks {banks}, {len(events)} events"]
    preferred = log.bank_ids[-1]
    for number, event in enumerate(events):
        digest = event.digest(preferred) or (event.digests[0][1] if event.digests else b"")
        decoded = _decoded(log, number, event)
        flag = "  [digest does not cover the event data]" if check_event(event) is False else ""
        lines.append(
            f"{number:4d} pcr{event.pcr_index:<3d} {event_type_name(event.event_type):34s} "
            f"{digest[:8].hex():16s} {decoded.describe()}{flag}"
        )
    return lines


@app.command(name="replay")
def replay_command(
    log_path: Path = LOG_ARGUMENT,
    bank: list[str] = typer.Option(
        [], "--bank", help="Bank to replay (repeatable); default: every bank the log carries."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Replay the log and print the resulting PCR values per bank."""
    values = replay(_read(log_path), wanted_banks(bank))
    if as_json:
        typer.echo(json.dumps(replay_document(values), indent=2))
        return
    for line in replay_lines(values):
        typer.echo(line)


def wanted_banks(bank: list[str]) -> tuple[int, ...] | None:
    """``--bank``: the algorithm IDs named (each one cvm knows); None for every bank."""
    return tuple(algorithm_by_name(name).alg_id for name in bank) if bank else None


def replay_document(values: dict[str, dict[int, bytes]]) -> dict[str, dict[str, str]]:
    return {name: {str(pcr): value.hex() for pcr, value in sorted(pcrs.items())}
            for name, pcrs in values.items()}


def replay_lines(values: dict[str, dict[int, bytes]]) -> list[str]:
    """Each bank, then each PCR it touched in order and its value."""
    lines = []
    for name, pcrs in values.items():
        lines.append(f"{name}:")
        lines.extend(f"  {pcr:2d}: {value.hex()}" for pcr, value in sorted(pcrs.items()))
    return lines
