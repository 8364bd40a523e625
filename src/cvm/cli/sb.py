"""``cvm sb``: sign PE images with the owner's key and verify them as Secure Boot firmware does.

``verify`` takes db and dbx as certificates (PEM/DER), EFI signature lists, or the db/dbx of an
OVMF varstore (``--varstore``), and prints the decision of
:func:`cvm.guest.boot.secureboot.verify_image`: exit 0 when allowed, 1 when refused, with the reason
and the database consulted. A refusal is printed once, as the error line on stderr. With
``--shim`` it decides as that shim would for the next stage; ``--mok``, ``--sbat-level`` and
``--protocol`` are shim's alone and refused without it (exit 64).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import typer

from cvm.cli.options import parse_file, reading, refuse_unused
from cvm.crypto.x509_edk2 import load_certificate, load_private_key
from cvm.errors import CvmError, FormatError, UsageError
from cvm.files import write_output
from cvm.formats.pe.sbat import SbatLevel
from cvm.formats.uefi.guids import EFI_IMAGE_SECURITY_DATABASE, SIGNATURE_TYPE_NAMES
from cvm.formats.uefi.signature_list import SignatureDatabase
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.secureboot import Decision, as_database, verify_image
from cvm.guest.boot.shim_policy import ShimState, verify_next_stage
from cvm.image.signing import sign_pe

app = typer.Typer(help="Secure Boot: sign PE images, verify them against db/dbx.",
                  no_args_is_help=True)


def read_database(paths: list[Path]) -> SignatureDatabase:
    """db/dbx from files: each an X.509 certificate (PEM or DER) or EFI signature lists, at
    least one (an empty file given as a database would silently allow or deny nothing)."""
    database = SignatureDatabase()
    for path in paths:
        data = path.read_bytes()
        try:
            load_certificate(data)
        except FormatError:
            try:
                listed = SignatureDatabase.parse(data)
            except FormatError:
                listed = SignatureDatabase()
            if not len(listed):
                raise FormatError(
                    f"{path}: neither an X.509 certificate nor EFI signature lists"
                ) from None
            database += listed
        else:
            database += as_database([data])
    return database


def decision_json(decision: Decision) -> dict[str, object]:
    matched = decision.matched
    return {
        "image": decision.image,
        "allowed": decision.allowed,
        "reason": decision.reason,
        "database": decision.database,
        "variable_vendor": str(decision.variable_vendor),
        "authenticode_sha256": decision.image_digest.hex(),
        "signature_index": decision.signature_index,
        "matched": None if matched is None else {
            "signature_type": SIGNATURE_TYPE_NAMES.get(decision.signature_type, "")
            if decision.signature_type else None,
            "owner": str(matched.owner),
            "data_sha256": hashlib.sha256(matched.data).hexdigest(),
            "size": len(matched.data),
        },
        "chain": [hashlib.sha256(c).hexdigest() for c in decision.chain],
    }


VERIFY_PATH = typer.Argument(..., help="The PE image to verify.")
DB_OPTION = typer.Option([], "--db", help="db entries: certificate or ESL file (repeatable).")
DBX_OPTION = typer.Option([], "--dbx", help="dbx entries: certificate or ESL file (repeatable).")
VARSTORE_OPTION = typer.Option(None, "--varstore", help="Take db and dbx from this varstore.")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of text.")
SHIM_OPTION = typer.Option(None, "--shim", help="Decide as this shim binary would for the "
                           "next stage (vendor certificate, MokList, SBAT) instead of firmware.")
MOK_OPTION = typer.Option([], "--mok", help="MokList entries for --shim: certificate or ESL.")
SBAT_LEVEL_OPTION = typer.Option(None, "--sbat-level", help="SbatLevel payload file for --shim "
                                 "(default: the shim's built-in previous level).")
PROTOCOL_OPTION = typer.Option(False, "--protocol", help="With --shim: the image is verified "
                               "through the shim_lock protocol (GRUB -> kernel), .sbat optional.")
SIGN_PATH = typer.Argument(..., help="The PE image to sign.")
KEY_OPTION = typer.Option(..., "--key", help="The signing key (PEM or DER, unencrypted).")
CERT_OPTION = typer.Option(..., "--cert", help="The signer's certificate (PEM or DER).")
CHAIN_OPTION = typer.Option([], "--chain", help="Intermediate certificates to embed.")
OUTPUT_OPTION = typer.Option(..., "-o", "--output", help="Where to write the signed image.")
APPEND_OPTION = typer.Option(False, "--append", help="Keep the existing signatures.")


@app.command()
def verify(
    path: Path = VERIFY_PATH,
    db: list[Path] = DB_OPTION,
    dbx: list[Path] = DBX_OPTION,
    varstore: Path | None = VARSTORE_OPTION,
    as_json: bool = JSON_OPTION,
    shim: Path | None = SHIM_OPTION,
    mok: list[Path] = MOK_OPTION,
    sbat_level: Path | None = SBAT_LEVEL_OPTION,
    protocol: bool = PROTOCOL_OPTION,
) -> None:
    """Decide as the firmware (or, with --shim, shim) would; exit 0 allowed, 1 refused."""
    shim_options_unused(shim, mok, sbat_level, protocol)
    allow, deny = databases(db, dbx, varstore)
    decision = decide(path, allow, deny, varstore_given=varstore is not None, shim=shim,
                      mok=mok, sbat_level=sbat_level, protocol=protocol)
    if as_json:
        typer.echo(json.dumps(decision_json(decision), indent=2))
    refuse(decision)
    if not as_json:
        for line in allowed_lines(decision):
            typer.echo(line)


def shim_options_unused(shim: Path | None, mok: list[Path], sbat_level: Path | None,
                        protocol: bool) -> None:
    """Refuse ``--mok``, ``--sbat-level`` and ``--protocol`` without ``--shim``: the firmware
    reads none of them, and a user who gave one believed the decision took it into account."""
    if shim is None:
        refuse_unused("a firmware decision (without --shim)", {
            "--mok": bool(mok), "--sbat-level": sbat_level is not None, "--protocol": protocol})


def databases(db: list[Path], dbx: list[Path], varstore: Path | None
              ) -> tuple[SignatureDatabase, SignatureDatabase]:
    """db and dbx: the files given, each joined by the varstore's own db and dbx."""
    allow, deny = read_database(db), read_database(dbx)
    if varstore is not None:
        store = parse_file(varstore, "--varstore", Varstore.parse)
        for name in ("db", "dbx"):
            variable = store.get(name, EFI_IMAGE_SECURITY_DATABASE)
            if variable is not None:
                with reading(varstore, "--varstore"):
                    parsed = SignatureDatabase.parse(variable.data)
                allow, deny = (allow + parsed, deny) if name == "db" else (allow, deny + parsed)
    return allow, deny


def decide(path: Path, allow: SignatureDatabase, deny: SignatureDatabase, *,
           varstore_given: bool, shim: Path | None, mok: list[Path], sbat_level: Path | None,
           protocol: bool) -> Decision:
    """The decision on the image at ``path``: shim's for its next stage when ``shim`` is given
    (its vendor certificate, MokList, SBAT), else the firmware's, which needs a db."""
    if shim is not None:
        level = parse_file(sbat_level, "--sbat-level", SbatLevel.parse) if sbat_level else None
        mok_list = read_database(mok)
        state = parse_file(shim, "--shim",
                           lambda data: ShimState.from_shim(data, allow, deny, mok_list, level))
        return parse_file(path, "", lambda data: verify_next_stage(
            data, state, str(path), in_protocol=protocol))
    if not len(allow) and not varstore_given:
        raise UsageError("give db entries with --db (or a varstore with --varstore)")
    return parse_file(path, "", lambda data: verify_image(data, allow, deny, name=str(path)))


def refuse(decision: Decision) -> None:
    """A refusal is the one error line, exit 1: the check ran and said no (cvm.errors)."""
    if not decision.allowed:
        raise CvmError(str(decision))


def allowed_lines(decision: Decision) -> list[str]:
    """What an allowed image's text output says: the decision, and the entry that allowed it."""
    lines = [str(decision)]
    if decision.matched is not None:
        lines.append(f"matched entry: owner {decision.matched.owner}, "
                     f"{len(decision.matched.data)} bytes")
    return lines


@app.command()
def sign(
    path: Path = SIGN_PATH,
    key: Path = KEY_OPTION,
    cert: Path = CERT_OPTION,
    chain: list[Path] = CHAIN_OPTION,
    output: Path = OUTPUT_OPTION,
    append: bool = APPEND_OPTION,
) -> None:
    """Sign the image (Authenticode, SHA-256, RSA PKCS#1 v1.5) as sbsign does."""
    signer = (parse_file(key, "--key", load_private_key),
              parse_file(cert, "--cert", load_certificate),
              tuple(parse_file(c, "--chain", load_certificate) for c in chain))
    signed = parse_file(path, "", lambda data: sign_pe(data, *signer, replace=not append))
    write_output(output, signed)
    typer.echo(f"signed {path} -> {output}")
