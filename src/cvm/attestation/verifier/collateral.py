"""Collateral on disk: VCEKs, KDS certificate chains and the ARKs' CRLs, kept so that
verification works offline.

A relying party fetches from AMD's KDS (AMD 57230, KDS interface) once — each product's
``/vcek/v1/<product>/cert_chain`` (ASK then ARK) and ``/vcek/v1/<product>/crl``, each chip's
VCEK per TCB — and verifies from the cache afterwards, with no network and the same checks: a
cached CRL past its nextUpdate is reported as stale by the chain verifier, never silently
trusted. Files are named ``vcek-<hwID hex>-<tcb hex>.der`` (the hwID and TCB of the VCEK's own
extensions: 64 bytes of chip ID, 8 on Turin; the TCB in its product's byte layout, as
REPORTED_TCB holds it), ``cert_chain-<product>.pem`` and ``crl-<product>.der``; the VCEKs and
chains are filed by :mod:`.collateral_certificates`, the cache listed by
:mod:`.collateral_listing`.

A CRL enters the cache (:func:`add_crl`) filed under the product whose trusted ARK signed it
(the chain verifier's own CRL signature check, time aside), and never replaces a cached one
that is newer (an older thisUpdate is a rollback: it could un-revoke an ASK). Appraisal takes
the CRL of the product of the evidence's ARK (:func:`evidence_crl`), as the chain verifier
names it: the trusted root the ARK's SHA-256 pins.
"""

from __future__ import annotations

import errno
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.x509_chain import (
    Certificate,
    RevocationList,
    check_crl_signature,
    crl_is_current,
    parse_crl,
)
from cvm.errors import ChainError, FormatError, PolicyError, UsageError
from cvm.files import PUBLIC_MODE, write_atomically
from cvm.formats.snp.tcb_version import TcbVersion

PRODUCTS = ("Milan", "Genoa", "Turin")
FRESH, STALE, NOT_YET_VALID = "fresh", "stale", "not yet valid"
CRL_FILE = re.compile(rf"crl-({'|'.join(PRODUCTS)})\.der")
CHAIN_FILE = re.compile(rf"cert_chain-({'|'.join(PRODUCTS)})\.pem")
VCEK_FILE = re.compile(r"vcek-(?:[0-9a-f]{128}|[0-9a-f]{16})-[0-9a-f]{16}\.der")


class CollateralCache:
    """A directory of DER files; writes are atomic (write, then rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _write(self, name: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(self.directory / name, data, PUBLIC_MODE)

    def _read(self, name: str) -> bytes | None:
        path = self.directory / name
        return path.read_bytes() if path.is_file() else None

    def put_vcek(self, chip_id: bytes, tcb: TcbVersion, der: bytes) -> None:
        self._write(vcek_file_name(chip_id, tcb), der)

    def vcek(self, chip_id: bytes, tcb: TcbVersion) -> bytes | None:
        return self._read(vcek_file_name(chip_id, tcb))

    def put_chain(self, product: str, pem: bytes) -> None:
        self._write(chain_file_name(product), pem)

    def chain(self, product: str) -> bytes | None:
        return self._read(chain_file_name(product))

    def put_crl(self, product: str, der: bytes) -> None:
        self._write(crl_file_name(product), der)

    def crl(self, product: str) -> bytes | None:
        return self._read(crl_file_name(product))


def vcek_file_name(hw_id: bytes, tcb: TcbVersion) -> str:
    """The VCEK of the chip ``hw_id`` (the VCEK's hwID: a Turin chip's 8 bytes, else the 64
    of CHIP_ID) at ``tcb`` (its bytes as REPORTED_TCB holds them)."""
    return f"vcek-{hw_id.hex()}-{tcb.to_bytes().hex()}.der"


def known_product(product: str) -> str:
    if product not in PRODUCTS:
        raise UsageError(f"unknown product {product!r}; known: {', '.join(PRODUCTS)}")
    return product


def crl_file_name(product: str) -> str:
    return f"crl-{known_product(product)}.der"


def chain_file_name(product: str) -> str:
    return f"cert_chain-{known_product(product)}.pem"


def missing(what: str, kds_path: str, directory: Path) -> FileNotFoundError:
    """The error of a file the cache lacks: what is missing and where KDS serves it (exit 74,
    one line: ``no … in the collateral cache (fetch KDS …, then add it): DIR``)."""
    return FileNotFoundError(
        errno.ENOENT, f"no {what} in the collateral cache (fetch KDS {kds_path}, then "
                      "cvm attest collateral add it)", str(directory))


def ark_product(ark: bytes, roots: TrustRoots) -> str | None:
    """The product of the ARK (DER) a chain ends in, named as the chain verifier names it —
    the trusted root its SHA-256 pins — or None when ``roots`` do not trust it."""
    return roots.product_of(hashlib.sha256(ark).hexdigest())


def evidence_crl(directory: Path, ark: bytes, roots: TrustRoots, *,
                 required: bool = True) -> bytes | None:
    """The cached CRL of the product of the evidence's ARK. None when the ARK is not trusted:
    no CRL is looked up, the chain check refuses the evidence and says why. A trusted product
    without a CRL in the cache is the missing file's error (:func:`missing`): the user asked
    for revocation — unless the caller allows none (``required=False``: None)."""
    product = ark_product(ark, roots)
    if product is None:
        return None
    crl = CollateralCache(directory).crl(product)
    if crl is None and required:
        raise missing(f"{product} CRL", f"/vcek/v1/{product}/crl", directory)
    return crl


def crl_product(crl: RevocationList, arks: Iterable[Certificate], roots: TrustRoots) -> str:
    """The product whose trusted ARK (among ``arks``) issued and signed ``crl`` — the chain
    verifier's CRL check, whatever the time; :class:`ChainError` if none did."""
    tried = []
    for ark in arks:
        product = roots.product_of(ark.fingerprint_sha256)
        if product is None:
            continue
        tried.append(product)
        try:
            check_crl_signature(crl, ark)
        except ChainError:
            continue
        return product
    issuer = next((value for name, value in crl.issuer if name == "common_name"), "?")
    raise ChainError(f"the CRL of {issuer!r} is signed by no trusted ARK "
                     f"({roots.label}: {', '.join(tried) or 'no ARK certificate given'})")


def crl_freshness(crl: RevocationList, now: datetime) -> str:
    """fresh (``now`` from thisUpdate to nextUpdate), stale (past nextUpdate: appraisal
    refuses it) or not yet valid (before thisUpdate)."""
    if crl_is_current(crl, now):
        return FRESH
    return NOT_YET_VALID if now < crl.this_update else STALE


@dataclass(frozen=True)
class AddedCrl:
    """A CRL filed in the cache: its product, what it replaced (None: nothing authentic),
    and whether it is current at the time given."""

    product: str
    crl: RevocationList
    replaced: RevocationList | None
    freshness: str


def add_crl(directory: Path, data: bytes, arks: list[Certificate], roots: TrustRoots,
            now: datetime) -> AddedCrl:
    """File the CRL ``data`` (DER or PEM) under the product whose trusted ARK signed it.
    Refused: not a CRL (:class:`FormatError`), signed by no trusted ARK (:class:`ChainError`),
    older than the authentic CRL cached for that product (:class:`PolicyError`: a rollback).
    A stale CRL is filed (appraisal reports it); the result says so."""
    crl = parse_crl(data)
    product = crl_product(crl, arks, roots)
    cache = CollateralCache(directory)
    cached = authentic_cached_crl(cache.crl(product), product, arks, roots)
    if cached is not None and crl.this_update < cached.this_update:
        raise PolicyError(
            f"a rollback: this {product} CRL's thisUpdate {crl.this_update.isoformat()} is "
            f"older than the cached one's {cached.this_update.isoformat()}; refused")
    cache.put_crl(product, crl.der)
    return AddedCrl(product, crl, cached, crl_freshness(crl, now))


def authentic_cached_crl(data: bytes | None, product: str, arks: list[Certificate],
                         roots: TrustRoots) -> RevocationList | None:
    """The cached CRL of ``product`` if a trusted ARK of that product signed it: one that does
    not parse, or is not that product's, keeps no newer CRL out."""
    if data is None:
        return None
    try:
        cached = parse_crl(data)
        return cached if crl_product(cached, arks, roots) == product else None
    except (FormatError, ChainError):
        return None
