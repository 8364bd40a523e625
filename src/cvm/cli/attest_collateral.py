"""``cvm attest collateral``: fill and list the relying party's collateral cache.

``add DIR FILE... [--trust amd|emulated] [--chain CERTS]... [--now T]`` files each FILE by what
its content is, as AMD's KDS serves it:

* a ``/vcek/v1/<product>/cert_chain`` (PEM: ASK then ARK) whose ARK is a trusted root that
  signs the ASK, as ``DIR/cert_chain-<product>.pem``;
* a CRL (DER or PEM, ``/vcek/v1/<product>/crl``) as ``DIR/crl-<product>.der``, the product
  being that of the trusted ARK whose signature it carries;
* a VCEK (DER or PEM, ``/vcek/v1/<product>/<hwID>?...``) that chains through an ASK of its
  product to a trusted ARK, as ``DIR/vcek-<hwID>-<tcb>.der`` from its own extensions.

cvm pins AMD's ARKs by fingerprint, not by certificate: a CRL's ARK and a VCEK's ASK come from
the chains cached (add the cert_chain once), or from ``--chain`` files; with ``--trust
emulated`` this installation's emulated ARKs are known too. Refused: a file that is none of the
three (65), a chain, CRL or VCEK that does not verify to a trusted ARK (66), a CRL older than
the one cached for its product (67: a rollback), a CRL or VCEK with no ARK or chain to check it
with (64). A stale CRL is filed, and the line says it is stale. Files are added in the order
given (a chain before what it vouches for); a refusal stops at that file, the lines before it
say what was added.

``show DIR [--json] [--now T] [--trust amd|emulated]`` lists every file of the cache: each
chain (product, ASK, ARK), each CRL (product, issuer, thisUpdate, nextUpdate, fresh or stale at
the time, revoked serials), each VCEK (chip id, TCB, subject, validity), each verified against
the cached chain of its product or said not verified (or unusable, and why); and each file
that is not usable collateral with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cvm.cli.options import given_time, parse_file
from cvm.errors import ChainError, UsageError

if TYPE_CHECKING:  # the verifier and the certificate code load when a command runs, not with
    # the `cvm attest` group (its --help and its other commands)
    from cvm.attestation.verifier.collateral import AddedCrl
    from cvm.attestation.verifier.collateral_certificates import AddedChain, AddedVcek
    from cvm.attestation.verifier.collateral_listing import Entry, Status
    from cvm.crypto.x509_chain import Certificate, RevocationList

app = typer.Typer(help="The collateral cache: add chains, VCEKs and CRLs, show what it holds.",
                  no_args_is_help=True)
SHORT_NAMES = {"common_name": "CN", "organization_name": "O", "organizational_unit_name": "OU",
               "locality_name": "L", "state_or_province_name": "ST", "country_name": "C"}
CHIP_ID_SHOWN = 8  # bytes of the chip id a line shows (all of a Turin hwID)
CHAIN_SIZE = 2  # a cert_chain: the ASK, then the ARK
NO_ARK = ("no trusted ARK certificate to check a CRL's signature with (cvm pins AMD's ARKs by "
          "fingerprint only): add KDS /vcek/v1/<product>/cert_chain to the cache first, or "
          "give it with --chain")


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
    """The roots ``--trust`` names and the ARK certificates given or known (emulated) that a
    CRL may be signed by; the cache's chains add theirs when a CRL is filed."""
    from cvm.cli.attest import _roots

    roots = _roots(trust)
    arks = [ark for path in chains for ark in given_arks(path, roots)]
    if trust == "emulated":
        arks += emulated_arks()
    return roots, arks


def given_chains(paths: list[Path]) -> list[tuple[bytes, bytes]]:
    """The ASK and ARK (DER) of each ``--chain`` file that is a cert_chain (two
    certificates), for a VCEK to be verified with."""
    from cvm.crypto.x509_chain import load_certificates

    found = []
    for path in paths:
        ders = [cert.der for cert in parse_file(path, "--chain", load_certificates)]
        if len(ders) == CHAIN_SIZE:
            found.append((ders[0], ders[1]))
    return found


@dataclass(frozen=True)
class Trusted:
    """What ``add`` checks signatures with: the roots, the ARKs given or known, the chains
    given (the cache's own are read when a file needs them)."""

    trust: str
    roots: Any
    arks: list[Certificate]
    chains: list[tuple[bytes, bytes]]


def filing_line(path: Path, directory: Path, data: bytes, *, trusted: Trusted,
                now: datetime) -> str:
    """File one FILE by what its content is (chain, CRL or VCEK); what ``add`` says of it."""
    from cvm.attestation.verifier.collateral import add_crl
    from cvm.attestation.verifier.collateral_certificates import (
        CHAIN,
        CRL,
        add_chain,
        add_vcek,
        cached_arks,
        collateral_kind,
    )

    kind = collateral_kind(data)
    if kind == CHAIN:
        return chain_line(path, directory, add_chain(directory, data, trusted.roots), now)
    if kind == CRL:
        arks = [*trusted.arks, *cached_arks(directory, trusted.roots)]
        if not arks:
            raise UsageError(f"--trust {trusted.trust}: {NO_ARK}")
        return added_line(path, directory, add_crl(directory, data, arks, trusted.roots, now),
                          now)
    return vcek_line(path, directory, add_vcek(directory, data, trusted.chains, trusted.roots),
                     now)


def chain_line(path: Path, directory: Path, added: AddedChain, now: datetime) -> str:
    from cvm.attestation.verifier.chain import validity_window
    from cvm.attestation.verifier.collateral import chain_file_name
    from cvm.attestation.verifier.collateral_certificates import chain_window_note

    line = (f"{path}: {added.product} cert_chain (ASK {added.ask.common_name}, ARK "
            f"{added.ark.common_name} SHA-256 {added.ark.fingerprint_sha256[:16]}...) filed as "
            f"{directory / chain_file_name(added.product)}")
    if added.replaced:
        line += ", replacing another"
    return line + chain_window_note(*validity_window((added.ask, added.ark)), now)


def vcek_line(path: Path, directory: Path, added: AddedVcek, now: datetime) -> str:
    from cvm.attestation.verifier.collateral_certificates import chain_window_note

    claims = added.chain.claims
    line = (f"{path}: {claims.product_name} VCEK of chip {chip_shown(claims.hw_id)} at TCB "
            f"{claims.tcb} filed as {directory / added.name}")
    if added.replaced:
        line += ", replacing another"
    return line + chain_window_note(added.chain.valid_from, added.chain.valid_until, now)


def chip_shown(chip: bytes) -> str:
    return chip[:CHIP_ID_SHOWN].hex() + ("..." if len(chip) > CHIP_ID_SHOWN else "")


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


def additions(directory: Path, files: list[Path], trusted: Trusted,
              now: datetime) -> Iterator[str]:
    """Add each file in turn (a refusal names the file), a line for each."""
    for path in files:
        yield parse_file(path, "", partial(filing_line, path, directory, trusted=trusted,
                                           now=now))


def distinguished_name(name: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{SHORT_NAMES.get(kind, kind)}={value}" for kind, value in name)


def _next_update(crl: RevocationList) -> str:
    return crl.next_update.isoformat() if crl.next_update is not None else "none"


def status_json(status: Status) -> dict[str, str]:
    return {"status": status.state, "reason": status.reason}


def entry_json(entry: Entry) -> dict[str, Any]:
    """One file of the cache as ``show --json`` prints it."""
    from cvm.attestation.verifier.collateral_listing import CachedChain, CachedCrl, CachedVcek

    if isinstance(entry, CachedCrl):
        crl = entry.crl
        return {"file": entry.name, "kind": "crl", "product": entry.product,
                "issuer": distinguished_name(crl.issuer),
                "this_update": crl.this_update.isoformat(), "next_update": _next_update(crl),
                "freshness": entry.freshness, "revoked": len(crl.revoked_serials),
                **status_json(entry.status)}
    if isinstance(entry, CachedVcek):
        cert = entry.certificate
        return {"file": entry.name, "kind": "vcek", "product": entry.claims.product_name,
                "chip_id": entry.claims.hw_id.hex(), "tcb": str(entry.claims.tcb),
                "subject": distinguished_name(cert.subject),
                "not_before": cert.not_before.isoformat(),
                "not_after": cert.not_after.isoformat(), **status_json(entry.status)}
    if isinstance(entry, CachedChain):
        return {"file": entry.name, "kind": "cert_chain", "product": entry.product,
                "ask": distinguished_name(entry.ask.subject),
                "ark": distinguished_name(entry.ark.subject),
                "ark_sha256": entry.ark.fingerprint_sha256,
                **status_json(entry.status)}
    return {"file": entry.name, "kind": "unreadable", "reason": entry.reason}


def entry_line(entry: Entry, now: datetime) -> str:
    """One file of the cache as ``show`` prints it."""
    from cvm.attestation.verifier.collateral_listing import (
        CachedChain,
        CachedCrl,
        CachedVcek,
        status_text,
    )

    if isinstance(entry, CachedCrl):
        crl = entry.crl
        return (f"{entry.name}: {entry.product} CRL, issuer {distinguished_name(crl.issuer)}, "
                f"thisUpdate {crl.this_update.isoformat()}, nextUpdate {_next_update(crl)}, "
                f"{entry.freshness} at {now.isoformat()}, "
                f"{len(crl.revoked_serials)} revoked serial(s), {status_text(entry.status)}")
    if isinstance(entry, CachedVcek):
        cert = entry.certificate
        return (f"{entry.name}: {entry.claims.product_name} VCEK, chip "
                f"{chip_shown(entry.claims.hw_id)}, TCB {entry.claims.tcb}, subject "
                f"{distinguished_name(cert.subject)}, valid {cert.not_before.isoformat()} to "
                f"{cert.not_after.isoformat()}, {status_text(entry.status)}")
    if isinstance(entry, CachedChain):
        return (f"{entry.name}: {entry.product} cert_chain, ASK "
                f"{distinguished_name(entry.ask.subject)} valid to "
                f"{entry.ask.not_after.isoformat()}, ARK SHA-256 "
                f"{entry.ark.fingerprint_sha256}, {status_text(entry.status)}")
    return f"{entry.name}: unreadable: {entry.reason}"


def listing(directory: Path, now: datetime, as_json: bool, roots: Any) -> list[str]:
    """What ``show`` prints: a line per file (an empty cache says so), or one JSON document."""
    from cvm.attestation.verifier.collateral_listing import list_cache

    entries = list_cache(directory, now, roots)
    if as_json:
        return [json.dumps({"directory": str(directory), "now": now.isoformat(),
                            "files": [entry_json(entry) for entry in entries]}, indent=2)]
    return [entry_line(entry, now) for entry in entries] or [f"{directory}: no collateral"]


def add(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="The collateral cache.")],
    files: Annotated[list[Path], typer.Argument(
        metavar="FILE...", help="KDS cert_chains, VCEKs and CRLs (DER or PEM), as AMD's KDS "
                                "serves them.")],
    trust: Annotated[str, typer.Option(
        help="Trusted roots: amd (AMD's real ARKs, their certificates from a cached or given "
             "cert_chain) or emulated (this installation's emulated AMD).")] = "amd",
    chain: Annotated[list[Path] | None, typer.Option(
        help="A cert_chain not (yet) in the cache (PEM: ASK then ARK, as KDS serves it).")]
    = None,
    now: Annotated[str | None, typer.Option(
        help="Say whether each file is current at this ISO 8601 time.")] = None,
) -> None:
    """File each chain, VCEK and CRL once it verifies to a trusted ARK; refuse a rollback."""
    roots, arks = trusted_arks(trust, chain or [])
    trusted = Trusted(trust, roots, arks, given_chains(chain or []))
    for line in additions(directory, files, trusted, given_time("--now", now)):
        typer.echo(line)


def show(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="The collateral cache.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    now: Annotated[str | None, typer.Option(
        help="Say whether each CRL is current at this ISO 8601 time.")] = None,
    trust: Annotated[str, typer.Option(
        help="The roots a cached cert_chain must end in: amd or emulated.")] = "amd",
) -> None:
    """List the cache's chains, CRLs and VCEKs, each verified against the cached chain of its
    product, and any file in it that is not usable collateral."""
    from cvm.cli.attest import _roots

    for line in listing(directory, given_time("--now", now), as_json, _roots(trust)):
        typer.echo(line)


# not decorated: the commands' own lines are mutation-tested
app.command("add")(add)
app.command("show")(show)
