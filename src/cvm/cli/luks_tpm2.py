"""``cvm luks enroll-tpm2`` and ``cvm luks unlock-tpm2``: the vTPM as a LUKS2 unlocker.

``enroll-tpm2 IMAGE --key-file F --tpm-state STATE --pcrs 7 [--bank sha256] (--pcr-values FILE |
--from-eventlog LOG) [--public-key PUB.pem [--public-key-pcrs 11]] [--pin | --pin-file P]``
seals 32 random bytes to the predicted PCRs with the vTPM of STATE, adds a PBKDF2-SHA512
keyslot for base64(secret) and a ``systemd-tpm2`` token (systemd-cryptenroll 252's format).
``unlock-tpm2 IMAGE --tpm-state STATE --eventlog LOG [--pin-file P] [--pcr-signature JSON]
[--token-id N] [-o VOLUME_KEY]`` boots the vTPM with the log's measurements and unseals; a
changed boot fails with the TPM's response code (exit 68). STATE is sealed as ``cvm tpm``
seals it: ``--tpm-key-file K`` gives its key, ``--keyring F`` the keyring (see
:mod:`cvm.vtpm.state_store`).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import typer

from cvm.cli import luks
from cvm.cli.options import reading, refuse_unused
from cvm.cli.tpm import (
    BANK,
    KEYRING,
    PCRS,
    boot_from_eventlog,
    parse_pcrs,
    predicted_values,
    read_pin,
    running_tpm,
)
from cvm.errors import UsageError
from cvm.files import write_output
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.guest.tpm.luks_token import (
    SystemdTpm2Token,
    enroll,
    signed_policy,
    tpm2_tokens,
    unlock,
)
from cvm.guest.tpm.seal import SealPolicy
from cvm.vtpm.templates import public_from_pem

DEFAULT_SIGNED_PCRS = "11"  # systemd-cryptenroll's: the UKI's own measurements
TPM_STATE = typer.Option(..., "--tpm-state", help="vTPM state file (cvm tpm manufacture).")
TPM_KEY_FILE = typer.Option(None, "--tpm-key-file",
                            help="The vTPM state's key; default: a key kept in the keyring.")


def _pin(pin: bool, pin_file: Path | None) -> bytes | None:
    """The PIN: from ``--pin-file``, else prompted for ``--pin``, else none. Both at once are
    refused: the user would not know which PIN the token ends up with."""
    if pin and pin_file is not None:
        raise UsageError("give --pin or --pin-file, not both")
    if pin_file is not None:
        return read_pin(pin_file)
    if pin:
        return str(typer.prompt("TPM2 PIN", hide_input=True)).encode()
    return None


def enroll_tpm2(
    image: Path,
    key_file: Path = luks.KEY_FILE,
    tpm_state: Path = TPM_STATE,
    pcrs: str = PCRS,
    bank: str = BANK,
    pcr_values: Path = typer.Option(None, "--pcr-values", help="Raw predicted PCR values."),
    from_eventlog: Path = typer.Option(None, "--from-eventlog", help="Predict from a log."),
    public_key: Path = typer.Option(None, "--public-key", help="PEM key signing PCR policies."),
    public_key_pcrs: str = typer.Option(DEFAULT_SIGNED_PCRS, "--public-key-pcrs",
                                        help="PCRs it signs (with --public-key)."),
    pin: bool = typer.Option(False, "--pin", help="Also require a PIN (prompted)."),
    pin_file: Path = typer.Option(None, "--pin-file", help="Read the PIN from a file."),
    tpm_key_file: Path = TPM_KEY_FILE,
    keyring: Path = KEYRING,
) -> None:
    """Seal a new key to predicted PCRs and add a systemd-tpm2 token and keyslot."""
    signer_options_unused(public_key, public_key_pcrs)
    indices = parse_pcrs(pcrs)
    values = predicted_values(bank, indices, pcr_values, from_eventlog)
    pin_value = _pin(pin, pin_file)
    pem: bytes | None = None  # the signer's key, its TPM form and PCRs: all three or none
    signer: Public | None = None
    signed_pcrs: tuple[int, ...] = ()
    if public_key is not None:
        pem = public_key.read_bytes()
        with reading(public_key, "--public-key"):
            signer = public_from_pem(pem)
        signed_pcrs = tuple(parse_pcrs(public_key_pcrs))
    policy = SealPolicy(PcrSelectionList.of(bank, indices), pin_value is not None, signer)
    with running_tpm(tpm_state, tpm_key_file, keyring) as (_, client), \
            luks.open_volume(image, write=True) as volume:
        volume_key = volume.unlock(luks.read_key_file(key_file))
        token_id = enroll(volume, volume_key, client, policy, values, secrets.token_bytes(32),
                          pin_value, pem, signed_pcrs)
    typer.echo(f"token {token_id}: systemd-tpm2, PCRs {bank}:{','.join(map(str, indices))}")


def signer_options_unused(public_key: Path | None, public_key_pcrs: str) -> None:
    """Refuse ``--public-key-pcrs`` without ``--public-key``: with no key to sign them, the
    PCRs it names would not be in the policy at all."""
    refuse_unused("an enrollment without --public-key", {
        "--public-key-pcrs": public_key is None and public_key_pcrs != DEFAULT_SIGNED_PCRS})


def chosen_token(image: Path, tokens: dict[int, SystemdTpm2Token], token_id: int | None
                 ) -> int:
    """The systemd-tpm2 token ``--token-id`` names, else the first one."""
    if not tokens:
        raise UsageError(f"{image} has no systemd-tpm2 token")
    chosen = token_id if token_id is not None else min(tokens)
    if chosen not in tokens:
        raise UsageError(f"{image} has no systemd-tpm2 token {chosen}")
    return chosen


def _read_signature(token: SystemdTpm2Token, path: Path | None) -> bytes | None:
    """systemd-measure's JSON, read before the vTPM boots (None: no ``--pcr-signature``)."""
    if path is None:
        return None
    if token.pubkey_pem is None:
        raise UsageError("the token has no public key: --pcr-signature is not needed")
    return path.read_bytes()


def unlock_tpm2(
    image: Path,
    tpm_state: Path = TPM_STATE,
    eventlog: Path = typer.Option(..., "--eventlog", help="Event log of the boot to replay."),
    pin_file: Path = typer.Option(None, "--pin-file", help="Read the PIN from a file."),
    pcr_signature: Path = typer.Option(None, "--pcr-signature", help="systemd PCR signature."),
    token_id: int = typer.Option(None, "--token-id", help="Which systemd-tpm2 token."),
    output: Path = typer.Option(None, "-o", "--output", help="Write the volume key here."),
    tpm_key_file: Path = TPM_KEY_FILE,
    keyring: Path = KEYRING,
) -> None:
    """Boot the vTPM with the log's measurements, unseal the token's key, open the volume."""
    with luks.open_volume(image) as volume:
        tokens = tpm2_tokens(volume)
        chosen = chosen_token(image, tokens, token_id)
        token = tokens[chosen]
        document = _read_signature(token, pcr_signature)
        with boot_from_eventlog(tpm_state, eventlog, tpm_key_file, keyring) as (_, client):
            signed = (signed_policy(token, document, client, str(pcr_signature))
                      if document is not None else None)
            volume_key = unlock(volume, token, client, read_pin(pin_file), signed)
    if output is not None:
        write_output(output, volume_key, secret=True)
    typer.echo(f"token {chosen}: unsealed; volume key {len(volume_key) * 8} bits")


def register() -> None:
    """Add the verbs to the ``cvm luks`` group."""
    names = {command.name for command in luks.app.registered_commands}
    if "enroll-tpm2" not in names:
        luks.app.command("enroll-tpm2")(enroll_tpm2)
        luks.app.command("unlock-tpm2")(unlock_tpm2)


register()
luks_group = luks.app
