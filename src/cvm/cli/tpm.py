"""``cvm tpm``: policy digests, sealing and unsealing with the vTPM, and inspection.

``policy pcr --bank sha256 --pcrs 0,7 (--pcr-values FILE | --from-eventlog LOG) [--pin]
[--json]`` prints the PolicyPCR digest (FILE holds the raw PCR values in selection order, as
``tpm2_policypcr -f`` takes them; ``--pin`` appends PolicyAuthValue as systemd does) ·
``policy authorize --key PUB.pem [--policy-ref HEX] [--json]`` · ``manufacture STATE`` (a
fresh vTPM state file) · ``seal --state STATE --pcrs ... (--pcr-values F | --from-eventlog L)
[--pin-file P] --in SECRET -o BLOB`` · ``unseal --state STATE --eventlog LOG --pcrs ...
[--pin-file P] BLOB [-o OUT]`` (the log is replayed into the vTPM's PCRs, so unsealing
succeeds only when the boot it records matches the policy) · ``inspect FILE [--json]`` ·
``serve --state STATE [--port P]`` (the vTPM for real tools: mssim TCP, or the ``cmd:`` TCTI on
stdin/stdout). ``cvm luks enroll-tpm2`` / ``unlock-tpm2`` come from :mod:`cvm.cli.luks_tpm2`.

Every command that takes ``--state`` also takes ``--key-file K`` (the state's own key) and
``--keyring F``: the state file is sealed and rollback-checked by :mod:`cvm.vtpm.state_store`,
saved before every response that changed it, and each run ends with an orderly
TPM2_Shutdown.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from cvm.cli.options import parse_file, reading
from cvm.errors import FormatError, StatusError, UsageError
from cvm.files import write_output
from cvm.formats.tcg.algorithm import ALGORITHMS_BY_ID
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.replay import initial_value, replay, startup_locality
from cvm.formats.tpm2.attest import QuoteAttest
from cvm.formats.tpm2.command import HEADER_SIZE, MAX_COMMAND_SIZE
from cvm.formats.tpm2.constants import TpmaObject, digest_size, hash_alg, hash_name
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.sealed_blob import SealedBlob
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.seal import SealPolicy, seal, unseal
from cvm.vtpm.engine import Tpm
from cvm.vtpm.mssim_server import MssimServer
from cvm.vtpm.pcr import BANKS
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.state_file import (
    STATE_FILE_MAGIC,
    USER_STATE_FILE_VERSION,
    KeySource,
    StateFileHeader,
)
from cvm.vtpm.state_store import (
    MS_PER_S,
    Keyring,
    StateStore,
    default_keyring,
    read_key_file,
)
from cvm.vtpm.templates import public_from_pem
from cvm.vtpm.volatile import VolatileState

app = typer.Typer(help="The vTPM: policy digests, seal/unseal, inspect TPM structures.",
                  no_args_is_help=True)
policy_app = typer.Typer(help="Compute policy digests offline (equal to tpm2_policy*).",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")

def _bank(name: str) -> str:
    """A PCR bank name the TPM knows; anything else is a usage error (64), not bad data."""
    try:
        hash_alg(name)
    except FormatError:
        raise typer.BadParameter(f"{name!r} is not a PCR bank (sha1, sha256 or sha384)") from None
    return name


BANK = typer.Option("sha256", "--bank", help="PCR bank: sha1, sha256 or sha384.",
                    callback=_bank)
PCRS = typer.Option(..., "--pcrs", help="Comma-separated PCR indices, e.g. 0,7.")
PCR_VALUES = typer.Option(None, "--pcr-values", help="Raw PCR values in selection order.")
FROM_LOG = typer.Option(None, "--from-eventlog", help="TCG event log to predict PCRs from.")
AS_JSON = typer.Option(False, "--json", help="JSON output.")
STATE = typer.Option(..., "--state", help="vTPM state file.")
PIN_FILE = typer.Option(None, "--pin-file", help="File holding the PIN.")
KEY_FILE = typer.Option(None, "--key-file",
                        help="The state's key (32 bytes or 64 hex digits); default: a key "
                             "kept in the keyring.")
KEYRING = typer.Option(None, "--keyring",
                       help="Keyring file (default: vtpm-keyring.json in the data directory).")


def parse_pcrs(text: str) -> list[int]:
    try:
        pcrs = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--pcrs: {text!r} is not a comma-separated list of numbers") from None
    if not pcrs or any(not 0 <= pcr < 24 for pcr in pcrs):
        raise UsageError("--pcrs: give PCR indices between 0 and 23")
    return pcrs


def predicted_values(bank: str, pcrs: list[int], values_file: Path | None,
                     eventlog: Path | None) -> list[bytes]:
    """The PCR values a policy expects, from a raw file or an event log replay."""
    alg = hash_alg(bank)
    size = digest_size(alg)
    if (values_file is None) == (eventlog is None):
        raise UsageError("give exactly one of --pcr-values and --from-eventlog")
    if values_file is not None:
        data = values_file.read_bytes()
        if len(data) != size * len(pcrs):
            raise FormatError(f"{values_file}: {len(data)} bytes, expected {size * len(pcrs)} "
                              f"({len(pcrs)} {bank} values)")
        return [data[i * size:(i + 1) * size] for i in range(len(pcrs))]
    assert eventlog is not None
    log = parse_file(eventlog, "--from-eventlog", EventLog.parse)
    algorithm = ALGORITHMS_BY_ID.get(alg)
    if algorithm is None:
        raise UsageError(f"bank {bank} is not known to the event log parser")
    replayed = replay(log, (alg,))[algorithm.name]
    locality = startup_locality(log)
    return [replayed.get(pcr, initial_value(pcr, algorithm, locality)) for pcr in pcrs]


def _emit(data: dict[str, Any], as_json: bool, main: str) -> None:
    typer.echo(json.dumps(data, indent=2) if as_json else data[main])


@policy_app.command("pcr")
def policy_pcr(bank: str = BANK, pcrs: str = PCRS, pcr_values: Path = PCR_VALUES,
               from_eventlog: Path = FROM_LOG,
               pin: bool = typer.Option(False, "--pin", help="Append PolicyAuthValue."),
               as_json: bool = AS_JSON) -> None:
    """Print the PolicyPCR (+ PolicyAuthValue) digest of predicted PCR values."""
    _emit(pcr_policy(bank, pcrs, pcr_values, from_eventlog, pin), as_json, "policy")


def pcr_policy(bank: str, pcrs: str, pcr_values: Path | None, from_eventlog: Path | None,
               pin: bool) -> dict[str, Any]:
    """``policy pcr``'s digest: PolicyPCR over the predicted values, then PolicyAuthValue when
    ``pin`` (as systemd seals with a PIN)."""
    indices = parse_pcrs(pcrs)
    values = predicted_values(bank, indices, pcr_values, from_eventlog)
    selection = PcrSelectionList.of(bank, indices)
    digest = SealPolicy(selection, pin).digest(values)
    return {"policy": digest.hex(), "bank": bank, "pcrs": indices, "pin": pin,
            "pcr_values": {str(p): v.hex() for p, v in zip(indices, values, strict=True)}}


@policy_app.command("authorize")
def policy_authorize(key: Path = typer.Option(..., "--key", help="PEM public key."),
                     policy_ref: str = typer.Option("", "--policy-ref", help="Hex policyRef."),
                     as_json: bool = AS_JSON) -> None:
    """Print PolicyAuthorize(key Name, policyRef): a policy any signed PCR policy satisfies."""
    _emit(authorize_policy(key, policy_ref), as_json, "policy")


def authorize_policy(key: Path, policy_ref: str) -> dict[str, Any]:
    """``policy authorize``'s digest: PolicyAuthorize(the key's Name, ``policy_ref``)."""
    public = parse_file(key, "--key", public_from_pem)
    try:
        reference = bytes.fromhex(policy_ref)
    except ValueError:
        raise UsageError("--policy-ref must be hex") from None
    digest = PolicyDigest.start().authorize(public.name(), reference)
    return {"policy": digest.hex(), "key_name": public.name().hex()}


def keyring_at(path: Path | None) -> Keyring:
    return Keyring(path if path is not None else default_keyring())


def open_store(state: Path, key_file: Path | None,
               keyring: Path | None) -> tuple[StateStore, Tpm, bytes]:
    """Open the sealed state file ``state`` (its key from ``key_file`` or the keyring)."""
    key = read_key_file(key_file) if key_file is not None else None
    with reading(state):
        return StateStore.open(state, keyring_at(keyring), key)


def started_tpm(state: Path, key_file: Path | None, keyring: Path | None,
                locality: int) -> tuple[StateStore, Tpm, TpmClient]:
    """The vTPM of ``state`` powered on at ``locality``: Startup(CLEAR), each change of what
    follows saved before its response."""
    store, tpm, _ = open_store(state, key_file, keyring)
    client = TpmClient(store.attach(tpm, locality))
    client.startup()
    return store, tpm, client


def stopped_tpm(store: StateStore, tpm: Tpm, client: TpmClient) -> None:
    """An orderly Shutdown (a TPM already failing is saved all the same), then a last save."""
    with suppress(StatusError):
        client.shutdown()
    store.save(tpm)


@contextmanager
def running_tpm(state: Path, key_file: Path | None, keyring: Path | None,
                locality: int = 0) -> Iterator[tuple[Tpm, TpmClient]]:
    """A powered-on vTPM from ``state`` (:func:`started_tpm`), the caller's commands, then
    :func:`stopped_tpm` whatever they did."""
    store, tpm, client = started_tpm(state, key_file, keyring, locality)
    try:
        yield tpm, client
    finally:
        stopped_tpm(store, tpm, client)


def extend_log(client: TpmClient, log: EventLog) -> None:
    """Extend every measurement of ``log`` (not its NO_ACTION events) into the TPM's PCRs, in
    each bank both the log and the TPM have."""
    for event in log.events:
        if event.event_type == EventType.EV_NO_ACTION:
            continue
        digests = {alg: value for alg in log.bank_ids if alg in BANKS
                   and (value := event.digest(alg)) is not None}
        client.pcr_extend(event.pcr_index, digests)


@contextmanager
def boot_from_eventlog(state: Path, eventlog: Path, key_file: Path | None = None,
                       keyring: Path | None = None) -> Iterator[tuple[Tpm, TpmClient]]:
    """The vTPM of ``state`` with every measurement of ``eventlog`` extended into it."""
    log = parse_file(eventlog, "--eventlog", EventLog.parse)
    with running_tpm(state, key_file, keyring, startup_locality(log)) as (tpm, client):
        extend_log(client, log)
        yield tpm, client


def read_pin(pin_file: Path | None) -> bytes | None:
    return pin_file.read_bytes().rstrip(b"\r\n") if pin_file is not None else None


@app.command("manufacture")
def manufacture(state: Path, key_file: Path = KEY_FILE, keyring: Path = KEYRING) -> None:
    """Write a fresh vTPM (new seeds) to STATE, sealed under KEY_FILE or a new keyring key."""
    typer.echo(manufactured(state, key_file, keyring))


def manufactured(state: Path, key_file: Path | None, keyring: Path | None) -> str:
    """Manufacture the vTPM of ``state``, sealed under ``key_file`` else a new keyring key;
    the line that says which."""
    key = read_key_file(key_file) if key_file is not None else None
    ring = keyring_at(keyring)
    store = StateStore.manufacture(state, ring, key)
    where = f"the key file {key_file}" if key_file is not None else f"a key kept in {ring.path}"
    return (f"{state}: a new vTPM, sealed under {where} (key id "
            f"{store.counter.kid.hex()}, counter in {ring.path})")


@app.command("seal")
def seal_command(state: Path = STATE, bank: str = BANK, pcrs: str = PCRS,
                 pcr_values: Path = PCR_VALUES, from_eventlog: Path = FROM_LOG,
                 pin_file: Path = PIN_FILE,
                 secret: Path = typer.Option(..., "--in", help="Secret to seal (≤128 bytes)."),
                 output: Path = typer.Option(..., "-o", "--output", help="Sealed blob."),
                 key_file: Path = KEY_FILE, keyring: Path = KEYRING) -> None:
    """Seal a secret to predicted PCR values (and a PIN); write TPM2B_PRIVATE ‖ TPM2B_PUBLIC."""
    blob = sealed_secret(state, bank, pcrs, pcr_values, from_eventlog, pin_file,
                         secret.read_bytes(), key_file, keyring)
    write_output(output, blob.to_bytes())


def sealed_secret(state: Path, bank: str, pcrs: str, pcr_values: Path | None,
                  from_eventlog: Path | None, pin_file: Path | None, secret: bytes,
                  key_file: Path | None, keyring: Path | None) -> SealedBlob:
    """``secret`` sealed by the vTPM of ``state`` to the predicted PCR values, and to the PIN
    of ``pin_file`` when given."""
    indices = parse_pcrs(pcrs)
    values = predicted_values(bank, indices, pcr_values, from_eventlog)
    pin = read_pin(pin_file)
    policy = SealPolicy(PcrSelectionList.of(bank, indices), pin is not None)
    with running_tpm(state, key_file, keyring) as (_, client):
        return seal(client, secret, policy.digest(values).value, pin)


@app.command("unseal")
def unseal_command(blob: Path, state: Path = STATE, bank: str = BANK, pcrs: str = PCRS,
                   eventlog: Path = typer.Option(..., "--eventlog",
                                                 help="Event log of the boot to replay."),
                   pin_file: Path = PIN_FILE,
                   output: Path = typer.Option(None, "-o", "--output", help="Write here."),
                   key_file: Path = KEY_FILE, keyring: Path = KEYRING) -> None:
    """Boot the vTPM with the event log's measurements, then unseal BLOB."""
    secret = unsealed_secret(blob, state, bank, pcrs, eventlog, pin_file, key_file, keyring)
    if output is None:
        sys.stdout.buffer.write(secret)
    else:
        write_output(output, secret, secret=True)


def unsealed_secret(blob: Path, state: Path, bank: str, pcrs: str, eventlog: Path,
                    pin_file: Path | None, key_file: Path | None, keyring: Path | None) -> bytes:
    """``blob`` unsealed by the vTPM of ``state`` after the boot ``eventlog`` records, under
    the PCR policy (and the PIN of ``pin_file`` when given)."""
    indices = parse_pcrs(pcrs)
    sealed = parse_file(blob, "", SealedBlob.from_bytes)
    pin = read_pin(pin_file)
    policy = SealPolicy(PcrSelectionList.of(bank, indices), pin is not None)
    with boot_from_eventlog(state, eventlog, key_file, keyring) as (_, client):
        return unseal(client, sealed, policy, pin)


def _describe_public(public: Public) -> dict[str, Any]:
    flags = [flag.name.lower() for flag in TpmaObject if public.attributes & flag and flag.name]
    return {"type": f"{public.type:#06x}", "name_alg": hash_name(public.name_alg),
            "attributes": f"{public.attributes:#010x}", "attribute_names": flags,
            "auth_policy": public.auth_policy.hex(), "name": public.name().hex()}


@app.command("inspect")
def inspect(path: Path, as_json: bool = AS_JSON) -> None:
    """Describe a TPM2B_PUBLIC, TPMT_PUBLIC, sealed blob, TPMS_ATTEST (quote message) or
    vTPM state file (its header)."""
    described = describe(path)
    if as_json:
        typer.echo(json.dumps(described, indent=2))
    else:
        for key, value in described.items():
            typer.echo(f"{key}: {value}")


def describe(path: Path) -> dict[str, Any]:
    """A vTPM state file (by its magic: its header, checked, the state itself stays sealed),
    else the first structure ``path`` parses as, strictly: a sealed blob, a TPM2B_PUBLIC, a
    TPMT_PUBLIC or a TPMS_ATTEST; anything else is malformed input."""
    data = path.read_bytes()
    if data.startswith(STATE_FILE_MAGIC):
        try:
            return describe_state_file(StateFileHeader.parse(data))
        except FormatError as error:
            raise FormatError(f"{path}: {error}") from None
    parsers: list[tuple[str, Any]] = [
        ("sealed blob", lambda d: _describe_public(SealedBlob.from_bytes(d).public)),
        ("TPM2B_PUBLIC", lambda d: _describe_public(Public.from_tpm2b(d))),
        ("TPMT_PUBLIC", lambda d: _describe_public(Public.from_bytes(d))),
        ("TPMS_ATTEST", lambda d: _describe_quote(QuoteAttest.from_bytes(d))),
    ]
    for kind, parse in parsers:
        try:
            return {"structure": kind, **parse(data)}
        except FormatError:
            continue
    raise FormatError(f"{path} is not a TPM public area, sealed blob or quote")


def describe_state_file(header: StateFileHeader) -> dict[str, Any]:
    """What a vTPM state file's clear header says; its state is encrypted and stays so."""
    names = {int(source): source.name.lower().replace("_", "-") for source in KeySource}
    source = names.get(header.key_source, f"unknown ({header.key_source})")
    described: dict[str, Any] = {
        "structure": "vTPM state file", "version": header.version, "key_source": source,
        "counter": header.counter}
    if header.version == USER_STATE_FILE_VERSION:
        saved = datetime.fromtimestamp(header.saved_at_ms / MS_PER_S, UTC)
        described["key_id"] = header.key_id.hex()
        described["saved_at"] = saved.isoformat(timespec="milliseconds")
    described["sealed_state_bytes"] = header.size
    return described


def _describe_quote(attest: QuoteAttest) -> dict[str, Any]:
    return {"qualified_signer": attest.qualified_signer.hex(),
            "extra_data": attest.extra_data.hex(), "clock": attest.clock_info.clock,
            "pcr_select": str(attest.pcr_select), "pcr_digest": attest.pcr_digest.hex()}



@dataclass
class TpmServer:
    """A vTPM that keeps running across ``serve`` invocations: STATE holds its non-volatile
    state and, sealed with it, its PCRs, loaded objects and sessions."""

    store: StateStore
    tpm: Tpm

    @classmethod
    def open(cls, path: Path, key_file: Path | None, keyring: Path | None) -> TpmServer:
        store, tpm, volatile = open_store(path, key_file, keyring)
        if volatile:
            tpm.restore_volatile(VolatileState.from_bytes(volatile))
        served = cls(store, tpm)
        if not volatile:
            TpmClient(served.execute).startup()
        return served

    def execute(self, command: bytes) -> bytes:
        self.tpm.on_da_used = self.save
        response = self.tpm.execute(command)
        if self.tpm.changed:
            self.save()
        return response

    def save(self) -> None:
        self.store.save(self.tpm, self.tpm.volatile().to_bytes())


@app.command("serve")
def serve(state: Path = STATE,
          port: int = typer.Option(None, "--port", help="Serve mssim on TCP PORT and PORT+1."),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
          key_file: Path = KEY_FILE, keyring: Path = KEYRING) -> None:
    """Serve the vTPM of STATE to real tools.

    With ``--port``: the TPM simulator protocol (``TPM2TOOLS_TCTI=mssim:port=PORT``,
    ``systemd-cryptenroll --tpm2-device=mssim:port=PORT``) until interrupted; STATE is
    resealed after every command that changes it. Without: raw command and response buffers on
    stdin/stdout, as the ``cmd:`` TCTI expects (``TPM2TOOLS_TCTI="cmd:cvm tpm serve --state
    S"``), the running TPM's volatile state sealed into STATE between invocations."""
    if port is not None:
        serve_mssim(state, port, host, key_file, keyring)
    else:
        serve_stdio(state, key_file, keyring, sys.stdin.buffer, sys.stdout.buffer)


def serve_port(port: int) -> int:
    """An mssim command port whose platform port (``port + 1``) is a TCP port too."""
    if not 0 < port < 0xFFFF:
        raise UsageError("--port must be between 1 and 65534")
    return port


def serve_mssim(state: Path, port: int, host: str, key_file: Path | None,
                keyring: Path | None) -> None:
    """Serve the vTPM of ``state`` on mssim TCP until stopped; each change saved before its
    response, and a last save at the end unless the TPM went into failure mode (then it ran
    past what its clients were told, and the file keeps the last sound state)."""
    serve_port(port)
    store, tpm, _ = open_store(state, key_file, keyring)
    server = MssimServer(tpm, port, host, on_change=store.save)
    server.tpm.on_da_used = lambda: store.save(server.tpm)
    typer.echo(f"vTPM listening on {host}:{port} (platform {port + 1})", err=True)
    try:
        server.serve_forever()
    finally:
        if server.failure is None:
            store.save(server.tpm)


def serve_stdio(state: Path, key_file: Path | None, keyring: Path | None, source: Any,
                sink: Any) -> None:
    """Answer each command read from ``source`` on ``sink`` until ``source`` ends (the
    ``cmd:`` TCTI), the TPM's volatile state saved into ``state`` at the end."""
    served = TpmServer.open(state, key_file, keyring)
    try:
        while True:
            header = source.read(HEADER_SIZE)
            if len(header) < HEADER_SIZE:
                break
            size = int.from_bytes(header[2:6], "big")
            body = source.read(max(0, min(size, MAX_COMMAND_SIZE) - HEADER_SIZE))
            sink.write(served.execute(header + body))
            sink.flush()
    finally:
        served.save()
