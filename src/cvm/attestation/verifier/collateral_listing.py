"""The collateral cache listed file by file, each entry verified as far as the cache allows.

Each ``cert_chain-<product>.pem`` is checked as :func:`.collateral_certificates.add_chain`
checks it (its ARK a trusted root of that product, signing the ASK); each CRL's signature and
each VCEK's chain are checked against the chain of their product when one is cached and
usable — else they are *not verified*, and say why. A VCEK whose file name is not the one its
own extensions give (another chip or TCB) is *unusable*: the lookup by report would find it
under a name that is not its own. Time is not a reason to call an entry unusable: a CRL says
whether it is fresh, a certificate its validity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cvm.attestation.verifier.chain import authenticate_chain, authenticated_ask
from cvm.attestation.verifier.collateral import (
    CHAIN_FILE,
    CRL_FILE,
    PRODUCTS,
    VCEK_FILE,
    CollateralCache,
    crl_freshness,
    vcek_file_name,
)
from cvm.attestation.verifier.collateral_certificates import chain_ders, product_of_name
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.x509_chain import (
    Certificate,
    RevocationList,
    check_crl_signature,
    parse_certificate,
    parse_crl,
)
from cvm.errors import ChainError, FormatError
from cvm.formats.snp.vcek_extensions import VcekExtensions

VERIFIED, NOT_VERIFIED, UNUSABLE = "verified", "not verified", "unusable"
NO_CHAIN = "no chain cached"
# A product's cached chain: its ASK and ARK once they check, the reason they do not, or None.
ChainState = tuple[bytes, bytes] | str | None


@dataclass(frozen=True)
class Status:
    """Whether an entry verified: ``verified``, ``not verified`` or ``unusable``, and why."""

    state: str
    reason: str = ""


def status_text(status: Status) -> str:
    """``verified``, ``not verified (why)`` or ``unusable: why``."""
    if status.state == VERIFIED:
        return VERIFIED
    if status.state == NOT_VERIFIED:
        return f"{NOT_VERIFIED} ({status.reason})"
    return f"{UNUSABLE}: {status.reason}"


@dataclass(frozen=True)
class CachedCrl:
    """A ``crl-<product>.der`` of the cache, parsed, its signature checked if it can be."""

    name: str
    product: str
    crl: RevocationList
    freshness: str
    status: Status


@dataclass(frozen=True)
class CachedVcek:
    """A ``vcek-<chip id>-<tcb>.der`` of the cache, parsed, with its AMD extensions."""

    name: str
    certificate: Certificate
    claims: VcekExtensions
    status: Status


@dataclass(frozen=True)
class CachedChain:
    """A ``cert_chain-<product>.pem`` of the cache: its ASK and ARK."""

    name: str
    product: str
    ask: Certificate
    ark: Certificate
    status: Status


@dataclass(frozen=True)
class Unreadable:
    """A file of the cache's folder that is not collateral cvm can use, and why."""

    name: str
    reason: str


Entry = CachedCrl | CachedVcek | CachedChain | Unreadable


def chain_state(data: bytes | None, product: str, roots: TrustRoots) -> ChainState:
    """The cached chain of ``product``, checked (None: no chain cached)."""
    if data is None:
        return None
    try:
        ask, ark = chain_ders(data)
        found = authenticated_ask(roots, ask, ark)[0]
    except (FormatError, ChainError) as error:
        return str(error)
    if found != product:
        return f"its ARK is {found}'s, not {product}'s"
    return ask, ark


def chain_states(directory: Path, roots: TrustRoots) -> dict[str, ChainState]:
    """Each product's cached chain, checked; one that cannot be read is unusable."""
    cache = CollateralCache(directory)
    states: dict[str, ChainState] = {}
    for product in PRODUCTS:
        try:
            states[product] = chain_state(cache.chain(product), product, roots)
        except OSError as error:
            states[product] = error.strerror or str(error)
    return states


def unverified(product: str, state: ChainState) -> Status:
    """Why an entry of ``product`` cannot be verified: no chain, or one that is unusable."""
    if state is None:
        return Status(NOT_VERIFIED, NO_CHAIN)
    return Status(NOT_VERIFIED, f"the cached {product} cert_chain is unusable")


def crl_status(crl: RevocationList, product: str, state: ChainState) -> Status:
    if not isinstance(state, tuple):
        return unverified(product, state)
    try:
        check_crl_signature(crl, parse_certificate(state[1]))
    except ChainError as error:
        return Status(UNUSABLE, str(error))
    return Status(VERIFIED)


def vcek_status(name: str, der: bytes, claims: VcekExtensions,
                states: dict[str, ChainState], roots: TrustRoots) -> Status:
    """A VCEK filed under its own name, chaining to the cached chain of its product."""
    own = vcek_file_name(claims.hw_id, claims.tcb)
    if name != own:
        return Status(UNUSABLE, f"its certificate is for chip {claims.hw_id[:8].hex()}... at "
                                f"TCB {claims.tcb.to_int():#018x}, its name would be {own}")
    try:
        product = product_of_name(claims.product_name)
    except FormatError as error:
        return Status(UNUSABLE, str(error))
    state = states[product]
    if not isinstance(state, tuple):
        return unverified(product, state)
    try:
        authenticate_chain(roots, der, *state)
    except ChainError as error:
        return Status(UNUSABLE, str(error))
    return Status(VERIFIED)


def chain_status(state: ChainState) -> Status:
    return Status(VERIFIED) if isinstance(state, tuple) else Status(UNUSABLE, str(state))


def list_cache(directory: Path, now: datetime, roots: TrustRoots) -> list[Entry]:
    """Every file in the cache's folder, by name (a folder that cannot be listed is the OS
    error): its chains, CRLs and VCEKs verified as far as the cache allows, and what does not
    parse with the reason."""
    paths = sorted(directory.iterdir())
    states = chain_states(directory, roots)
    return [cached_file(path, now, states, roots) for path in paths]


def cached_file(path: Path, now: datetime, states: dict[str, ChainState],
                roots: TrustRoots) -> Entry:
    """One file of the cache, read by what its name says it is."""
    crl_name, chain_name = CRL_FILE.fullmatch(path.name), CHAIN_FILE.fullmatch(path.name)
    try:
        if crl_name:
            product = crl_name[1]
            crl = parse_crl(path.read_bytes())
            return CachedCrl(path.name, product, crl, crl_freshness(crl, now),
                             crl_status(crl, product, states[product]))
        if chain_name:
            product = chain_name[1]
            ask, ark = (parse_certificate(der) for der in chain_ders(path.read_bytes()))
            return CachedChain(path.name, product, ask, ark, chain_status(states[product]))
        if VCEK_FILE.fullmatch(path.name):
            der = path.read_bytes()
            certificate = parse_certificate(der)
            claims = VcekExtensions.from_extensions(certificate.extension_values())
            return CachedVcek(path.name, certificate, claims,
                              vcek_status(path.name, der, claims, states, roots))
    except FormatError as error:
        return Unreadable(path.name, str(error))
    except OSError as error:
        return Unreadable(path.name, error.strerror or str(error))
    return Unreadable(path.name, "not a file of the cache (cert_chain-<product>.pem, "
                                 "crl-<product>.der, vcek-<chip id>-<tcb>.der)")
