"""``cvm varstore``: list an OVMF varstore's Secure Boot keys, and enroll the owner's own.

``show`` lists every live variable and decodes PK, KEK, db, dbx (and MokList*) as signature
lists (:mod:`cvm.formats.uefi.varstore`). ``enroll`` writes a 4 MiB OVMF varstore (or rewrites a
given template) holding the owner's PK, KEK, db and dbx with Secure Boot enabled. ``auth`` signs
an update (EFI_VARIABLE_AUTHENTICATION_2) and ``update`` applies one with the firmware's rules
(:mod:`cvm.guest.boot.secure_variables`): the right signer and a newer timestamp, or a refusal.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import typer

from cvm.cli.options import parse_file, reading
from cvm.crypto.x509_edk2 import der, load_certificate, load_private_key
from cvm.errors import FormatError, UsageError
from cvm.files import write_output
from cvm.formats.uefi.efi_time import EfiTime
from cvm.formats.uefi.guids import EFI_CERT_SHA256 as EFI_CERT_SHA256_GUID
from cvm.formats.uefi.guids import EFI_CERT_X509 as EFI_CERT_X509_GUID
from cvm.formats.uefi.guids import SECURE_BOOT_VARIABLES
from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList
from cvm.formats.uefi.variable import (
    EFI_VARIABLE_APPEND_WRITE,
    SECURE_BOOT_ATTRIBUTES,
    EfiVariable,
    attribute_names,
)
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.secure_variables import apply_update, sign_update
from cvm.wire import Guid

app = typer.Typer(help="OVMF NV varstores: list Secure Boot keys, enroll your own.",
                  no_args_is_help=True)

# edk2 SecurityPkg/Include/Guid/AuthenticatedVariableFormat.h
EFI_SECURE_BOOT_ENABLE_DISABLE = Guid.parse("f0a30bc7-af08-4556-99c4-001009c93a44")
EFI_CUSTOM_MODE_ENABLE = Guid.parse("c076ec0c-7028-4399-a072-71ee5c448b9f")
NV_BS = 0x3
SIGNATURE_VARIABLES = {"PK", "KEK", "db", "dbx", "dbt", "MokList", "MokListRT", "MokListX"}
FILE_ARGUMENT = typer.Argument(..., help="The varstore file (OVMF_VARS*.fd).")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of text.")
PK_OPTION = typer.Option(..., "--pk", help="The platform key certificate (PEM or DER).")
KEK_OPTION = typer.Option([], "--kek", help="A KEK certificate (repeatable).")
DB_OPTION = typer.Option([], "--db", help="A db certificate (repeatable).")
DB_HASH_OPTION = typer.Option([], "--db-hash", help="A SHA-256 image hash for db (hex).")
DBX_HASH_OPTION = typer.Option([], "--dbx-hash", help="A SHA-256 image hash for dbx (hex).")
OWNER_OPTION = typer.Option("00000000-0000-0000-0000-000000000000", "--owner",
                            help="The owner GUID of the entries.")
TEMPLATE_OPTION = typer.Option(None, "--template",
                               help="Start from this varstore instead of a blank 4 MiB one.")
OUTPUT_OPTION = typer.Option(..., "-o", "--output", help="Where to write the result.")
NAME_ARGUMENT = typer.Argument(..., help="The variable: PK, KEK, db, dbx, dbt or dbr.")
ESL_OPTION = typer.Option([], "--add", help="Certificate or ESL file to put in the update.")
KEY_OPTION = typer.Option(..., "--key", help="The signing key (PEM or DER).")
CERT_OPTION = typer.Option(..., "--cert", help="The signer's certificate (PEM or DER).")
TIME_OPTION = typer.Option("2025-01-01T00:00:00", "--time",
                           help="The update's timestamp (ISO 8601, UTC); must be newer.")
APPEND_OPTION = typer.Option(False, "--append", help="An append write (attributes 0x67).")
AUTH_ARGUMENT = typer.Argument(..., help="The .auth file (EFI_VARIABLE_AUTHENTICATION_2 + data).")


def _entries(variable: EfiVariable) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for item in SignatureDatabase.parse(variable.data).lists:
        for signature in item.signatures:
            entry: dict[str, object] = {
                "type": item.type_name, "owner": str(signature.owner),
                "size": len(signature.data),
            }
            if item.type_name == "EFI_CERT_X509":
                try:
                    entry["subject"] = load_certificate(signature.data).subject.rfc4514_string()
                except FormatError:
                    entry["subject"] = None
                entry["sha256"] = hashlib.sha256(signature.data).hexdigest()
            else:
                entry["hash"] = signature.data.hex()
            entries.append(entry)
    return entries


@app.command()
def show(path: Path = FILE_ARGUMENT, as_json: bool = JSON_OPTION) -> None:
    """List the live variables; decode PK, KEK, db, dbx and MokList as signature lists."""
    store = parse_file(path, "", Varstore.parse)
    with reading(path):
        variables = [variable_document(variable) for variable in store.variables]
    if as_json:
        typer.echo(json.dumps({"file": str(path), "variables": variables}, indent=2))
        return
    for line in show_lines(variables):
        typer.echo(line)


def variable_document(variable: EfiVariable) -> dict[str, object]:
    """A live variable: its name, vendor, attributes and size; the entries of a signature
    variable that is not empty, else the value of one of up to 8 bytes (a flag, a counter)."""
    document: dict[str, object] = {
        "name": variable.name, "vendor": str(variable.vendor),
        "attributes": attribute_names(variable.attributes), "size": len(variable.data),
    }
    if variable.name in SIGNATURE_VARIABLES and variable.data:
        document["entries"] = _entries(variable)
    elif len(variable.data) <= 8:
        document["value"] = variable.data.hex()
    return document


def show_lines(variables: list[dict[str, object]]) -> list[str]:
    """``show``'s text: a line per variable, then one per entry (a certificate by its subject,
    a hash by its value)."""
    lines = []
    for document in variables:
        lines.append(f"{document['name']} {{{document['vendor']}}} {document['attributes']} "
                     f"{document['size']} bytes" + (f" = {document['value']}"
                                                    if "value" in document else ""))
        for entry in document.get("entries", []):  # type: ignore[attr-defined]
            what = entry.get("subject") or entry.get("hash")
            lines.append(f"    {entry['type']} owner {entry['owner']}: {what}")
    return lines


def _x509_database(paths: list[Path], owner: Guid, option: str) -> SignatureDatabase:
    """A signature list per certificate file, each named by ``option`` when it does not parse."""
    return SignatureDatabase(tuple(
        SignatureList.of(EFI_CERT_X509_GUID, owner, der(parse_file(p, option, load_certificate)))
        for p in paths
    ))


def _hash_database(hashes: list[str], owner: Guid) -> SignatureDatabase:
    try:
        values = [bytes.fromhex(h) for h in hashes]
    except ValueError:
        raise FormatError("a hash is not hexadecimal") from None
    if any(len(v) != 32 for v in values):
        raise FormatError("an image hash for db/dbx must be 32 bytes (SHA-256)")
    return SignatureDatabase((SignatureList.of(EFI_CERT_SHA256_GUID, owner, *values),)
                             if values else ())


@app.command()
def enroll(
    pk: Path = PK_OPTION,
    kek: list[Path] = KEK_OPTION,
    db: list[Path] = DB_OPTION,
    db_hash: list[str] = DB_HASH_OPTION,
    dbx_hash: list[str] = DBX_HASH_OPTION,
    owner: str = OWNER_OPTION,
    template: Path | None = TEMPLATE_OPTION,
    output: Path = OUTPUT_OPTION,
) -> None:
    """Write a varstore with the owner's PK, KEK, db and dbx enrolled and Secure Boot on."""
    store = parse_file(template, "--template", Varstore.parse) if template else Varstore.empty_4m()
    values = enrolled_databases(pk, kek, db, db_hash, dbx_hash, Guid.parse(owner))
    write_output(output, enrolled(store, values).to_bytes())
    typer.echo(enroll_line(output, values))


ENROLL_TIME = EfiTime.from_datetime(datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC))


def enrolled_databases(pk: Path, kek: list[Path], db: list[Path], db_hash: list[str],
                       dbx_hash: list[str], owner: Guid) -> dict[str, SignatureDatabase]:
    """PK, KEK, db and dbx, in that order: the certificates given (each named by its option
    when it does not parse) and the image hashes, every entry under ``owner``."""
    return {
        "PK": _x509_database([pk], owner, "--pk"),
        "KEK": _x509_database(kek, owner, "--kek"),
        "db": _x509_database(db, owner, "--db") + _hash_database(db_hash, owner),
        "dbx": _hash_database(dbx_hash, owner),
    }


def enrolled(store: Varstore, values: dict[str, SignatureDatabase]) -> Varstore:
    """``store`` with each database that is not empty set (authenticated, time-stamped), Secure
    Boot enabled and custom mode off."""
    for name, database in values.items():
        if len(database):
            store = store.set(EfiVariable(name, SECURE_BOOT_VARIABLES[name],
                                          SECURE_BOOT_ATTRIBUTES, database.to_bytes(),
                                          ENROLL_TIME))
    store = store.set(EfiVariable("SecureBootEnable", EFI_SECURE_BOOT_ENABLE_DISABLE, NV_BS,
                                  b"\x01"))
    return store.set(EfiVariable("CustomMode", EFI_CUSTOM_MODE_ENABLE, NV_BS, b"\x00"))


def enroll_line(output: Path, values: dict[str, SignatureDatabase]) -> str:
    return f"wrote {output}: " + ", ".join(
        f"{name} {len(database)}" for name, database in values.items())


def update_data(paths: list[Path], owner: Guid) -> bytes:
    """An update's signature lists: each ``--add`` file a certificate (under ``owner``) or
    signature lists, in order; a file that is neither (an empty one too: an update without
    data deletes the variable) named."""
    database = SignatureDatabase()
    for path in paths:
        data = path.read_bytes()
        try:
            database += SignatureDatabase((SignatureList.of(
                EFI_CERT_X509_GUID, owner, der(load_certificate(data))),))
        except FormatError:
            try:
                listed = SignatureDatabase.parse(data)
            except FormatError:
                listed = SignatureDatabase()
            if not len(listed):
                raise FormatError(f"--add {path}: neither an X.509 certificate nor EFI "
                                  "signature lists") from None
            database += listed
    return database.to_bytes()


def update_time(text: str) -> EfiTime:
    """``--time``: ISO 8601; a time with an offset is taken in UTC, one without is UTC."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--time {text!r} is not an ISO 8601 date and time") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return EfiTime.from_datetime(moment)


def update_attributes(append: bool) -> int:
    """An authenticated write's attributes; ``--append`` adds APPEND_WRITE (0x67, not 0x27)."""
    return SECURE_BOOT_ATTRIBUTES | (EFI_VARIABLE_APPEND_WRITE if append else 0)


@app.command()
def auth(
    name: str = NAME_ARGUMENT,
    add: list[Path] = ESL_OPTION,
    key: Path = KEY_OPTION,
    cert: Path = CERT_OPTION,
    time: str = TIME_OPTION,
    owner: str = OWNER_OPTION,
    append: bool = APPEND_OPTION,
    output: Path = OUTPUT_OPTION,
) -> None:
    """Write a signed update (.auth, as sign-efi-sig-list does) for a Secure Boot variable."""
    payload = sign_update(
        name, update_data(add, Guid.parse(owner)), parse_file(key, "--key", load_private_key),
        parse_file(cert, "--cert", load_certificate), update_time(time),
        attributes=update_attributes(append),
    )
    write_output(output, payload)
    typer.echo(f"wrote {output}: {name} update, {len(payload)} bytes")


@app.command()
def update(
    path: Path = FILE_ARGUMENT,
    name: str = NAME_ARGUMENT,
    payload: Path = AUTH_ARGUMENT,
    append: bool = APPEND_OPTION,
    output: Path = OUTPUT_OPTION,
) -> None:
    """Apply a signed update as the firmware would: right signer, newer timestamp, or refuse."""
    current = parse_file(path, "", Varstore.parse)
    attributes = update_attributes(append)
    store = parse_file(payload, "", lambda data: apply_update(current, name, data, attributes))
    write_output(output, store.to_bytes())
    typer.echo(f"wrote {output}: {name} updated")
