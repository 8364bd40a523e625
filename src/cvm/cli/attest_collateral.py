"""``cvm attest collateral``: fill and list the relying party's collateral cache.

``add DIR FILE... [--trust amd|emulated] [--chain CERTS]... [--now T]`` files each CRL (DER or
PEM, as AMD's KDS serves ``/vcek/v1/<product>/crl``) as ``DIR/crl-<product>.der``, the product
being that of the trusted ARK whose signature it carries. cvm pins AMD's ARKs by fingerprint,
not by certificate: with ``--trust amd`` the ARKs' certificates come from ``--chain`` (KDS's
``/vcek/v1/<product>/cert_chain``, or any file holding them), and only those that hash to a
trusted root count; with ``--trust emulated`` this installation's emulated ARKs are known.
Refused: not a CRL (65), signed by no trusted ARK (66), older than the CRL cached for its
product (67: a rollback). A stale CRL is filed, and the line says it is stale. Files are added
in the order given; a refusal stops at that file, the lines before it say what was added.

``show DIR [--json] [--now T]`` lists every file of the cache: each CRL (product, issuer,
thisUpdate, nextUpdate, fresh or stale at the time, revoked serials), each VCEK (chip id, TCB,
subject, validity), and each file that is not usable collateral with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cvm.cli.options import given_time, parse_file
from cvm.errors import ChainError, UsageError

if TYPE_CHECKING:  # the verifier and the certificate code load when a command runs, not with
    # the `cvm attest` group (its --help and its other commands)
    from cvm.attestation.verifier.collateral import AddedCrl, CachedCrl, CachedVcek, Unreadable
    from cvm.crypto.x509_chain import Certificate, RevocationList

app = typer.Typer(help="The collateral cache: add CRLs to it, show what it holds.",
                  no_args_is_help=True)
SHORT_NAMES = {"common_name": "CN", "organization_name": "O", "organizational_unit_name": "OU",
               "locality_name": "L", "state_or_province_name": "ST", "country_name": "C"}
CHIP_ID_SHOWN = 8  # bytes of the chip id a line shows (all of a Turin hwID)
NO_ARK = ("no trusted ARK certificate to check a CRL's signature with (cvm pins AMD's ARKs by "
          "fingerprint only): give them with --chain (KDS /vcek/v1/<product>/cert_chain)")


def given_arks(path: Path, roots: Any) -> list[Certificate]:
    """The certificates of ``--chain`` ``path`` that are trusted ARKs; a file without one is
    refused (66): the user believed it held the root that signs the CRLs."""
    from cvm.attestation.verifier.collateral import ark_product
    from cvm.crypto.x509_chain import load_certificates

    certificates = parse_file(path, "--chain", load_certificates)
    arks = [cert for cert in certificates if ark_product(cert.der, roots) is not None]
    if not arks:
        raise ChainError(f"--chain {path}: no certificate in it is a trusted ARK ({roots.label})")
    return arks


def emulated_arks() -> list[Certificate]:
    """The ARK certificates of this installation's emulated AMD, every pinned product."""
    from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
    from cvm.crypto.x509_chain import parse_certificate

    return [parse_certificate(der)
            for der in RootStore.for_workspace(DEFAULT_WORKSPACE).ark_certificates()]


def trusted_arks(trust: str, chains: list[Path]) -> tuple[Any, list[Certificate]]:
    """The roots ``--trust`` names and the ARK certificates a CRL may be signed by."""
    from cvm.cli.attest import _roots

    roots = _roots(trust)
    arks = [ark for path in chains for ark in given_arks(path, roots)]
    if trust == "emulated":
        arks += emulated_arks()
    if not arks:
        raise UsageError(f"--trust {trust}: {NO_ARK}")
    return roots, arks


def added_line(path: Path, directory: Path, added: AddedCrl, now: datetime) -> str:
    """What ``add`` says of one CRL: where it went, what it replaced, whether it is current."""
    from cvm.attestation.verifier.collateral import FRESH, STALE, crl_file_name

    crl = added.crl
    line = (f"{path}: {added.product} CRL of {crl.this_update.isoformat()} "
            f"({len(crl.revoked_serials)} revoked) filed as "
            f"{directory / crl_file_name(added.product)}")
    if added.replaced is not None:
        line += f", replacing the one of {added.replaced.this_update.isoformat()}"
    if added.freshness == STALE:
        line += (f"; stale at {now.isoformat()} (nextUpdate {_next_update(crl)}): appraisal "
                 "refuses it until a newer one is added")
    elif added.freshness != FRESH:
        line += f"; not yet valid at {now.isoformat()}"
    return line


def crl_additions(directory: Path, files: list[Path], roots: Any, arks: list[Certificate],
                  now: datetime) -> Iterator[str]:
    """Add each CRL file in turn (a refusal names the file), a line for each."""
    from cvm.attestation.verifier.collateral import add_crl

    for path in files:
        added = parse_file(path, "", lambda data: add_crl(directory, data, arks, roots, now))
        yield added_line(path, directory, added, now)


def distinguished_name(name: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{SHORT_NAMES.get(kind, kind)}={value}" for kind, value in name)


def _next_update(crl: RevocationList) -> str:
    return crl.next_update.isoformat() if crl.next_update is not None else "none"


def entry_json(entry: CachedCrl | CachedVcek | Unreadable) -> dict[str, Any]:
    """One file of the cache as ``show --json`` prints it."""
    from cvm.attestation.verifier.collateral import CachedCrl, CachedVcek

    if isinstance(entry, CachedCrl):
        crl = entry.crl
        return {"file": entry.name, "kind": "crl", "product": entry.product,
                "issuer": distinguished_name(crl.issuer),
                "this_update": crl.this_update.isoformat(), "next_update": _next_update(crl),
                "freshness": entry.freshness, "revoked": len(crl.revoked_serials)}
    if isinstance(entry, CachedVcek):
        cert = entry.certificate
        return {"file": entry.name, "kind": "vcek", "product": entry.claims.product_name,
                "chip_id": entry.claims.hw_id.hex(), "tcb": str(entry.claims.tcb),
                "subject": distinguished_name(cert.subject),
                "not_before": cert.not_before.isoformat(),
                "not_after": cert.not_after.isoformat()}
    return {"file": entry.name, "kind": "unreadable", "reason": entry.reason}


def entry_line(entry: CachedCrl | CachedVcek | Unreadable, now: datetime) -> str:
    """One file of the cache as ``show`` prints it."""
    from cvm.attestation.verifier.collateral import CachedCrl, CachedVcek

    if isinstance(entry, CachedCrl):
        crl = entry.crl
        return (f"{entry.name}: {entry.product} CRL, issuer {distinguished_name(crl.issuer)}, "
                f"thisUpdate {crl.this_update.isoformat()}, nextUpdate {_next_update(crl)}, "
                f"{entry.freshness} at {now.isoformat()}, "
                f"{len(crl.revoked_serials)} revoked serial(s)")
    if isinstance(entry, CachedVcek):
        cert, chip = entry.certificate, entry.claims.hw_id
        shown = chip[:CHIP_ID_SHOWN].hex() + ("..." if len(chip) > CHIP_ID_SHOWN else "")
        return (f"{entry.name}: {entry.claims.product_name} VCEK, chip {shown}, "
                f"TCB {entry.claims.tcb}, subject {distinguished_name(cert.subject)}, valid "
                f"{cert.not_before.isoformat()} to {cert.not_after.isoformat()}")
    return f"{entry.name}: unreadable: {entry.reason}"


def listing(directory: Path, now: datetime, as_json: bool) -> list[str]:
    """What ``show`` prints: a line per file (an empty cache says so), or one JSON document."""
    from cvm.attestation.verifier.collateral import list_cache

    entries = list_cache(directory, now)
    if as_json:
        return [json.dumps({"directory": str(directory), "now": now.isoformat(),
                            "files": [entry_json(entry) for entry in entries]}, indent=2)]
    return [entry_line(entry, now) for entry in entries] or [f"{directory}: no collateral"]


def add(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="The collateral cache.")],
    files: Annotated[list[Path], typer.Argument(
        metavar="FILE...", help="CRLs (DER or PEM), as AMD's KDS serves them.")],
    trust: Annotated[str, typer.Option(
        help="Trusted roots: amd (AMD's real ARKs, their certificates from --chain) or "
             "emulated (this installation's emulated AMD).")] = "amd",
    chain: Annotated[list[Path] | None, typer.Option(
        help="Certificates holding trusted ARKs (PEM or DER; KDS's cert_chain).")] = None,
    now: Annotated[str | None, typer.Option(
        help="Say whether each CRL is current at this ISO 8601 time.")] = None,
) -> None:
    """File each CRL under the product whose trusted ARK signed it; refuse a rollback."""
    roots, arks = trusted_arks(trust, chain or [])
    for line in crl_additions(directory, files, roots, arks, given_time("--now", now)):
        typer.echo(line)


def show(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="The collateral cache.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    now: Annotated[str | None, typer.Option(
        help="Say whether each CRL is current at this ISO 8601 time.")] = None,
) -> None:
    """List the cache's CRLs and VCEKs, and any file in it that is not usable collateral."""
    for line in listing(directory, given_time("--now", now), as_json):
        typer.echo(line)


# not decorated: the commands' own lines are mutation-tested
app.command("add")(add)
app.command("show")(show)
