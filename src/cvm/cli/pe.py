"""``cvm pe``: the Authenticode hash and the contents of a PE/COFF image.

``hash`` prints the digest edk2 firmware (or, with ``--variant shim``, shim) computes
(:mod:`cvm.formats.pe.authenticode`); ``show`` lists sections, data directories, every
signature of the certificate table with its signer chain and signed digest, and the SBAT data.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import typer

from cvm.cli.options import parse_file
from cvm.crypto.authenticode import AuthenticodeSignature
from cvm.crypto.x509_edk2 import load_certificate
from cvm.errors import FormatError, UsageError
from cvm.formats.pe.authenticode import ALGORITHMS, Variant, digest_of, hashed_layout
from cvm.formats.pe.image import PeImage
from cvm.formats.pe.sbat import SbatLevelSection, SbatSection
from cvm.formats.pe.vendor_cert import VendorCertSection
from cvm.formats.uefi.signature_list import SignatureDatabase

app = typer.Typer(help="Inspect PE/COFF images: Authenticode hash, sections, signatures.",
                  no_args_is_help=True)

FILE_ARGUMENT = typer.Argument(..., help="The PE/COFF image (EFI application, kernel, UKI).")
JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of text.")


@app.command("hash")
def hash_command(
    path: Path = FILE_ARGUMENT,
    alg: str = typer.Option("sha256", "--alg", help=f"One of {', '.join(ALGORITHMS)}."),
    variant: str = typer.Option(
        "edk2", "--variant", help="edk2 (firmware) or shim (pads unsigned images to 8 bytes)."
    ),
) -> None:
    """Print the Authenticode digest of the image, as firmware computes it."""
    chosen = hash_variant(variant)
    image = parse_file(path, "", PeImage.parse)
    typer.echo(f"{digest_of(image, alg, chosen).hex()}  {path}")


def hash_variant(variant: str) -> Variant:
    """``--variant``: edk2's digest or shim's (a usage error, before the image is read)."""
    if variant == "shim":
        return "shim"
    if variant != "edk2":
        raise UsageError(f"unknown variant {variant!r}: use edk2 or shim")
    return "edk2"


def _signature_json(index: int, image: PeImage) -> dict[str, object]:
    entry = image.certificates[index]
    document: dict[str, object] = {
        "index": index, "revision": entry.revision, "type": entry.certificate_type,
        "length": entry.length,
    }
    if entry.pkcs7 is None:
        return document
    try:
        signature = AuthenticodeSignature.parse(entry.pkcs7)
    except FormatError as error:
        document["error"] = str(error)
        return document
    document["digest_algorithm"] = signature.digest_algorithm
    document["signed_digest"] = signature.digest.hex()
    document["digest_matches"] = signature.digest == digest_of(
        image, signature.digest_algorithm)
    document["signer"] = (signature.signer.subject.rfc4514_string()
                          if signature.signer is not None else None)
    document["certificates"] = [
        {"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string()}
        for c in signature.signed_data.certificates
    ]
    return document


def _extras_json(image: PeImage) -> dict[str, object]:
    extras: dict[str, object] = {}
    if image.sbat:
        extras["sbat"] = [e.to_line() for e in SbatSection.parse(image.sbat).entries]
    levels = image.section(".sbatlevel")
    if levels is not None:
        parsed = SbatLevelSection.parse(levels.loaded_data)
        extras["sbatlevel"] = {
            "previous": parsed.previous.to_bytes().decode(),
            "latest": parsed.latest.to_bytes().decode(),
        }
    vendor = image.section(".vendor_cert")
    if vendor is not None:
        parsed_vendor = VendorCertSection.parse(vendor.loaded_data)
        subject = None
        if parsed_vendor.authorized:
            with contextlib.suppress(FormatError):
                subject = load_certificate(parsed_vendor.authorized).subject.rfc4514_string()
        extras["vendor_cert"] = {
            "authorized_size": len(parsed_vendor.authorized),
            "authorized_subject": subject,
            "deauthorized_size": len(parsed_vendor.deauthorized),
            "deauthorized_entries": len(SignatureDatabase.parse(parsed_vendor.deauthorized)),
        }
    return extras


def describe(image: PeImage) -> dict[str, object]:
    """Everything ``cvm pe show`` prints, as a JSON-ready dict."""
    return {
        "format": "PE32+" if image.is_pe32_plus else "PE32",
        "machine": image.coff["machine"],
        "size": len(image.data),
        "authenticode_sha256": digest_of(image, "sha256").hex(),
        "checksum": image.optional["check_sum"],
        "checksum_valid": image.optional["check_sum"] == image.computed_checksum(),
        "hashed_ranges": [list(r) for r in hashed_layout(image).ranges],
        "sections": [
            {"name": s.name, "virtual_address": s.virtual_address,
             "virtual_size": s.virtual_size, "pointer_to_raw_data": s.pointer_to_raw_data,
             "size_of_raw_data": s.size_of_raw_data, "characteristics": s.characteristics}
            for s in image.sections
        ],
        "data_directories": [
            {"name": d.name, "virtual_address": d.virtual_address, "size": d.size}
            for d in image.data_directories if d.size
        ],
        "signatures": [_signature_json(i, image) for i in range(len(image.certificates))],
        **_extras_json(image),
    }


@app.command()
def show(path: Path = FILE_ARGUMENT, as_json: bool = JSON_OPTION) -> None:
    """List sections, data directories, signatures (signers, digests) and SBAT data."""
    document = parse_file(path, "", lambda data: describe(PeImage.parse(data)))
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    for line in show_lines(path, document):
        typer.echo(line)


NO_SIGNER = "not named (the signature holds no certificate of its signer)"


def show_lines(path: Path, document: dict[str, Any]) -> list[str]:
    """``show``'s text: the format and size, the digest, each section, each signature (its
    digest and whether it matches the image's, the signer, the certificates), the SBAT
    entries, the vendor certificate and the SBAT levels."""
    lines = [f"{path}: {document['format']}, {document['size']} bytes",
             f"authenticode sha256: {document['authenticode_sha256']}", "sections:"]
    for s in document["sections"]:
        lines.append(f"  {s['name']:<14} va {s['virtual_address']:#010x} vsize "
                     f"{s['virtual_size']:#x} raw {s['pointer_to_raw_data']:#x}+"
                     f"{s['size_of_raw_data']:#x}")
    signatures = document["signatures"]
    lines.append(f"signatures: {len(signatures)}")
    for sig in signatures:
        if "error" in sig:
            lines.append(f"  [{sig['index']}] does not parse: {sig['error']}")
            continue
        lines.append(f"  [{sig['index']}] {sig['digest_algorithm']} {sig['signed_digest']} "
                     f"({'matches' if sig['digest_matches'] else 'DOES NOT MATCH'})")
        lines.append(f"      signer: {sig['signer'] or NO_SIGNER}")
        for cert in sig["certificates"]:
            lines.append(f"      cert: {cert['subject']}  <-  {cert['issuer']}")
    for line in document.get("sbat", []):
        lines.append(f"sbat: {line}")
    if "vendor_cert" in document:
        vendor = document["vendor_cert"]
        lines.append(f"vendor_cert: {vendor['authorized_subject']}; vendor_dbx "
                     f"{vendor['deauthorized_entries']} entries")
    if "sbatlevel" in document:
        levels = document["sbatlevel"]
        for name in ("previous", "latest"):
            text = levels[name].strip().replace(chr(10), " ")
            lines.append(f"sbatlevel {name}: {text}")
    return lines
