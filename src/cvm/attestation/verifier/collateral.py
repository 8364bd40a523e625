"""Collateral on disk: VCEK certificates and the ARKs' CRLs, kept so appraisal works offline.

A relying party fetches a chip's VCEK (per TCB) and each product's CRL from AMD's KDS
(``/vcek/v1/<product>/crl``) once and appraises from the cache afterwards — with no network,
and with the same checks: a cached CRL past its nextUpdate is reported as stale by the chain
verifier, never silently trusted. Files are named ``vcek-<chip id hex>-<tcb hex>.der`` and
``crl-<product>.der``.

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
    parse_certificate,
    parse_crl,
)
from cvm.errors import ChainError, FormatError, PolicyError, UsageError
from cvm.files import PUBLIC_MODE, write_atomically
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.formats.snp.vcek_extensions import VcekExtensions

PRODUCTS = ("Milan", "Genoa", "Turin")
FRESH, STALE, NOT_YET_VALID = "fresh", "stale", "not yet valid"
CRL_FILE = re.compile(rf"crl-({'|'.join(PRODUCTS)})\.der")
VCEK_FILE = re.compile(r"vcek-[0-9a-f]+-[0-9a-f]{16}\.der")


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

    def put_crl(self, product: str, der: bytes) -> None:
        self._write(crl_file_name(product), der)

    def crl(self, product: str) -> bytes | None:
        return self._read(crl_file_name(product))


def vcek_file_name(chip_id: bytes, tcb: TcbVersion) -> str:
    return f"vcek-{chip_id.hex()}-{tcb.to_bytes().hex()}.der"


def crl_file_name(product: str) -> str:
    if product not in PRODUCTS:
        raise UsageError(f"unknown product {product!r}; known: {', '.join(PRODUCTS)}")
    return f"crl-{product}.der"


def ark_product(ark: bytes, roots: TrustRoots) -> str | None:
    """The product of the ARK (DER) a chain ends in, named as the chain verifier names it —
    the trusted root its SHA-256 pins — or None when ``roots`` do not trust it."""
    return roots.product_of(hashlib.sha256(ark).hexdigest())


def evidence_crl(directory: Path, ark: bytes, roots: TrustRoots) -> bytes | None:
    """The cached CRL of the product of the evidence's ARK. None when the ARK is not trusted:
    no CRL is looked up, the chain check refuses the evidence and says why. A trusted product
    without a CRL in the cache is the missing file's error: the user asked for revocation."""
    product = ark_product(ark, roots)
    if product is None:
        return None
    crl = CollateralCache(directory).crl(product)
    if crl is None:
        raise FileNotFoundError(errno.ENOENT, f"no {product} CRL in the collateral cache",
                                str(directory))
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


@dataclass(frozen=True)
class CachedCrl:
    """A ``crl-<product>.der`` of the cache, parsed (its signature is checked when used)."""

    name: str
    product: str
    crl: RevocationList
    freshness: str


@dataclass(frozen=True)
class CachedVcek:
    """A ``vcek-<chip id>-<tcb>.der`` of the cache, parsed, with its AMD extensions."""

    name: str
    certificate: Certificate
    claims: VcekExtensions


@dataclass(frozen=True)
class Unreadable:
    """A file of the cache's folder that is not collateral cvm can use, and why."""

    name: str
    reason: str


def list_cache(directory: Path, now: datetime) -> list[CachedCrl | CachedVcek | Unreadable]:
    """Every file in the cache's folder, by name (a folder that cannot be listed is the OS
    error): its CRLs, its VCEKs, and what does not parse with the reason."""
    return [cached_file(path, now) for path in sorted(directory.iterdir())]


def cached_file(path: Path, now: datetime) -> CachedCrl | CachedVcek | Unreadable:
    """One file of the cache, read by what its name says it is."""
    crl_name = CRL_FILE.fullmatch(path.name)
    try:
        if crl_name:
            crl = parse_crl(path.read_bytes())
            return CachedCrl(path.name, crl_name[1], crl, crl_freshness(crl, now))
        if VCEK_FILE.fullmatch(path.name):
            certificate = parse_certificate(path.read_bytes())
            claims = VcekExtensions.from_extensions(certificate.extension_values())
            return CachedVcek(path.name, certificate, claims)
    except FormatError as error:
        return Unreadable(path.name, str(error))
    except OSError as error:
        return Unreadable(path.name, error.strerror or str(error))
    return Unreadable(path.name, "not a file of the cache (crl-<product>.der, "
                                 "vcek-<chip id>-<tcb>.der)")
