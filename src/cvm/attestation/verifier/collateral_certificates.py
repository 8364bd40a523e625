"""VCEKs and KDS certificate chains in the collateral cache: recognised, verified and filed;
looked up for a bare report.

AMD 57230 (KDS interface): ``/vcek/v1/<product>/cert_chain`` is the ASK then the ARK (PEM);
``/vcek/v1/<product>/<hwID>?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..`` (Turin: ``fmcSPL``
first, and the chip ID's first 8 bytes as hwID) is the VCEK of one chip at one TCB (DER).

What enters the cache is verified first, time aside (validity is checked at use):

* a chain whose ARK is a trusted root (its pinned SHA-256), self-signed, signing the ASK — the
  chain verifier's own checks (:func:`.chain.authenticated_ask`) — is filed under the ARK's
  product as ``cert_chain-<product>.pem``;
* a VCEK that chains through a given or cached ASK of its product to a trusted ARK
  (:func:`.chain.authenticate_chain`) is filed as ``vcek-<hwID>-<tcb>.der``, named from its
  own extensions, never from what a file name or URL said.

A file's kind is read from its content (:func:`collateral_kind`). A bare report (as
``snpguest report`` writes it, with no certificates) finds its VCEK by its CHIP_ID and
REPORTED_TCB — the TCB real verifiers ask KDS for — and the VCEK found must name that chip and
TCB (:func:`report_vcek`); the chain and the CRL are those of the VCEK's product.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cvm.attestation.verifier.chain import VerifiedChain, authenticate_chain, authenticated_ask
from cvm.attestation.verifier.collateral import (
    PRODUCTS,
    CollateralCache,
    ark_product,
    chain_file_name,
    missing,
    vcek_file_name,
)
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.x509_chain import (
    Certificate,
    certificates_pem,
    load_certificates,
    parse_certificate,
    parse_crl,
)
from cvm.errors import ChainError, FormatError, UsageError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion
from cvm.formats.snp.vcek_extensions import HW_ID_SIZE, VcekExtensions

CRL, CHAIN, VCEK = "CRL", "cert_chain", "VCEK"
NONE_OF_THEM = "not a CRL, a KDS cert_chain (ASK then ARK) or a VCEK certificate"
CHAIN_SIZE = 2  # ASK, ARK
GENOA_FIRST_MODEL = 0x10  # family 19h: models 00h-0Fh are Milan's, from 10h Genoa's


def collateral_kind(data: bytes) -> str:
    """What ``data`` is, from its content: a CRL (DER or PEM), a KDS ``cert_chain`` (two
    certificates) or a VCEK (one certificate with a VCEK's AMD extensions); anything else
    is a :class:`FormatError` saying what it is not."""
    try:
        parse_crl(data)
        return CRL
    except FormatError:
        pass
    try:
        certificates = load_certificates(data)
    except FormatError:
        raise FormatError(NONE_OF_THEM) from None
    if len(certificates) == CHAIN_SIZE:
        return CHAIN
    if len(certificates) != 1:
        raise FormatError(f"{len(certificates)} certificates: {NONE_OF_THEM}")
    try:
        VcekExtensions.from_extensions(certificates[0].extension_values())
    except FormatError as error:
        raise FormatError(f"a certificate that is not a VCEK ({error}): {NONE_OF_THEM}") from None
    return VCEK


def product_of_name(product_name: str) -> str:
    """The KDS product of a VCEK's productName (``Milan-B0`` is Milan's)."""
    product = product_name.partition("-")[0]
    if product not in PRODUCTS:
        raise FormatError(f"the VCEK's productName {product_name!r} is no product cvm knows "
                          f"({', '.join(PRODUCTS)})")
    return product


def vcek_product(vcek: bytes) -> str:
    """The product a VCEK certificate (DER or PEM) names in its productName."""
    certificate = load_certificates(vcek)[0]
    return product_of_name(VcekExtensions.from_extensions(
        certificate.extension_values()).product_name)


@dataclass(frozen=True)
class AddedChain:
    """A KDS ``cert_chain`` filed: its product, ASK and ARK, and whether it replaced another."""

    product: str
    ask: Certificate
    ark: Certificate
    replaced: bool


def chain_ders(data: bytes) -> tuple[bytes, bytes]:
    """The ASK and the ARK (DER) of a ``cert_chain`` (PEM, or any certificates' framing)."""
    ders = [certificate.der for certificate in load_certificates(data)]
    if len(ders) != CHAIN_SIZE:
        raise FormatError(f"{len(ders)} certificate(s), a cert_chain is the ASK then the ARK")
    return ders[0], ders[1]


def add_chain(directory: Path, data: bytes, roots: TrustRoots) -> AddedChain:
    """File a ``cert_chain`` (ASK then ARK) under the product of its ARK, once the ARK is a
    trusted root that signs the ASK (:class:`ChainError` if not); written as PEM."""
    product, ask, ark = authenticated_ask(roots, *chain_ders(data))
    cache = CollateralCache(directory)
    pem = certificates_pem((ask.der, ark.der))
    cached = cache.chain(product)
    cache.put_chain(product, pem)
    return AddedChain(product, ask, ark, cached is not None and cached != pem)


def cached_chain_ders(directory: Path, product: str) -> tuple[bytes, bytes] | None:
    """The ASK and ARK (DER) of the cache's ``cert_chain`` of ``product``, or None when there
    is none or it is not two certificates (it is checked where it is used)."""
    data = CollateralCache(directory).chain(product)
    if data is None:
        return None
    try:
        return chain_ders(data)
    except FormatError:
        return None


def cached_arks(directory: Path, roots: TrustRoots) -> list[Certificate]:
    """The ARKs of the cache's chains that hash to a trusted root (for a CRL's signature)."""
    arks = []
    for product in PRODUCTS:
        ders = cached_chain_ders(directory, product)
        if ders is not None:
            ark = parse_certificate(ders[1])
            if roots.product_of(ark.fingerprint_sha256) is not None:
                arks.append(ark)
    return arks


@dataclass(frozen=True)
class AddedVcek:
    """A VCEK filed: its file name, its verified chain, whether it replaced another."""

    name: str
    chain: VerifiedChain
    replaced: bool


def add_vcek(directory: Path, data: bytes, chains: Iterable[tuple[bytes, bytes]],
             roots: TrustRoots) -> AddedVcek:
    """File a VCEK (DER or PEM) as ``vcek-<hwID>-<tcb>.der`` from its own extensions once it
    chains to a trusted ARK through the ASK of one of ``chains`` (given, ASK and ARK DER)
    or of the cache's chain of its product. No chain at all: :class:`UsageError`; none that
    verifies: the first one's :class:`ChainError`."""
    der = load_certificates(data)[0].der
    product = vcek_product(der)
    cached = cached_chain_ders(directory, product)
    candidates = [*chains, *([cached] if cached is not None else [])]
    if not candidates:
        raise UsageError(f"no {product} cert_chain to verify the VCEK with: add KDS "
                         f"/vcek/v1/{product}/cert_chain to the cache first, or give it "
                         "with --chain")
    errors: list[ChainError] = []
    for ask, ark in candidates:
        try:
            chain = authenticate_chain(roots, der, ask, ark)
        except ChainError as error:
            errors.append(error)
            continue
        cache = CollateralCache(directory)
        name = vcek_file_name(chain.claims.hw_id, chain.claims.tcb)
        replaced = cache.vcek(chain.claims.hw_id, chain.claims.tcb)
        cache.put_vcek(chain.claims.hw_id, chain.claims.tcb, der)
        return AddedVcek(name, chain, replaced is not None and replaced != der)
    raise errors[0]


def kds_vcek_path(product: str, hw_id: bytes, tcb: TcbVersion) -> str:
    """The KDS path of the VCEK of ``hw_id`` at ``tcb`` (Turin adds fmcSPL, first)."""
    spls = [("blSPL", tcb.boot_loader), ("teeSPL", tcb.tee), ("snpSPL", tcb.snp),
            ("ucodeSPL", tcb.microcode)]
    if tcb.layout is TcbLayout.TURIN:
        spls.insert(0, ("fmcSPL", tcb.fmc))
    query = "&".join(f"{name}={value:02d}" for name, value in spls)
    return f"/vcek/v1/{product}/{hw_id.hex()}?{query}"


def report_product(report: AttestationReport) -> str:
    """The KDS product of a report's chip, as far as the report says it: Turin by its TCB
    layout, Milan or Genoa by a version 3+ report's CPUID model; ``<product>`` otherwise."""
    if report.reported_tcb.layout is TcbLayout.TURIN:
        return "Turin"
    if report.version >= 3 and report.cpuid_fam_id:
        return "Genoa" if report.cpuid_mod_id >= GENOA_FIRST_MODEL else "Milan"
    return "<product>"


def report_vcek(directory: Path, report: AttestationReport) -> bytes:
    """The cached VCEK of the report's chip at its REPORTED_TCB. Missing: the missing file's
    error with the KDS path to fetch it. One whose certificate names another chip or TCB than
    the report (a file renamed or swapped) is a :class:`ChainError`, never returned."""
    tcb = report.reported_tcb
    hw_id = report.chip_id[: HW_ID_SIZE[tcb.layout]]
    found = CollateralCache(directory).vcek(hw_id, tcb)
    name = vcek_file_name(hw_id, tcb)
    if found is None:
        raise missing(f"VCEK of chip {hw_id[:8].hex()}... at TCB {tcb.to_int():#018x}",
                      kds_vcek_path(report_product(report), hw_id, tcb), directory)
    try:
        claims = VcekExtensions.from_extensions(parse_certificate(found).extension_values())
    except FormatError as error:
        raise FormatError(f"{directory / name}: {error}") from None
    if (claims.hw_id, claims.tcb.to_bytes()) != (hw_id, tcb.to_bytes()):
        raise ChainError(f"{directory / name} is the VCEK of chip {claims.hw_id[:8].hex()}... "
                         f"at TCB {claims.tcb.to_int():#018x}, not of the report's chip "
                         f"{hw_id[:8].hex()}... at {tcb.to_int():#018x}")
    return found


def chain_window_note(valid_from: datetime, valid_until: datetime, now: datetime) -> str:
    """Empty when ``now`` is within the window, else what a filing line says of it."""
    if valid_from <= now <= valid_until:
        return ""
    return (f"; not valid at {now.isoformat()} (valid {valid_from.isoformat()} to "
            f"{valid_until.isoformat()}): verification refuses it then")


def cached_chain(directory: Path, product: str, roots: TrustRoots) -> bytes:
    """The cache's ``cert_chain`` of ``product`` as filed (the chain verifier checks it);
    missing: the missing file's error with the KDS path to fetch it. One whose ARK is a
    trusted root of another product (a file swapped) is refused by name (:class:`ChainError`);
    an untrusted ARK is left to the chain verifier, which says so."""
    found = CollateralCache(directory).chain(product)
    if found is None:
        raise missing(f"{product} cert_chain", f"/vcek/v1/{product}/cert_chain", directory)
    path = directory / chain_file_name(product)
    try:
        ark = chain_ders(found)[1]
    except FormatError as error:
        raise FormatError(f"{path}: {error}") from None
    other = ark_product(ark, roots)
    if other is not None and other != product:
        raise ChainError(f"{path}: its ARK is {other}'s, the VCEK is {product}'s")
    return found
