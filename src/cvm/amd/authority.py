"""The emulated AMD root of trust for one product: ARK, ASK and the ARK's revocation list.

AMD 57230 (VCEK/KDS specification), certificate chain: the AMD Root Key (ARK, RSA-4096, self-signed)
signs the AMD SEV Signing Key (ASK, RSA-4096), which signs every VCEK of the product; all
signatures are RSASSA-PSS with SHA-384 and a 48-byte salt. The ARK also signs the product's
CRL, which revokes ASKs (KDS ``/vcek/v1/{product}/crl``).

Certificates copy the real Milan ARK and ASK field by field (serials 0x10000 and 0x10001,
25-year validity, the same extensions in the same order with the same criticality), with
the emulated names of :mod:`cvm.amd.product`. The keys are never derived from anything
public: :func:`generate_root` makes fresh RSA-4096 keys with ``cryptography``. A root is
either an installation's own, kept in its data directory and pinned by fingerprint
(:mod:`cvm.amd.root_store`, what ``cvm report verify --trust emulated`` trusts), or
:func:`ephemeral_root`, made once per process for the demo and the tests. The seed still
decides what must be reproducible and is not a key: chip secrets and signature salts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cvm.amd.product import (
    EMULATED_ORGANIZATION,
    EMULATED_ORGANIZATIONAL_UNIT,
    Product,
    product_named,
)
from cvm.crypto.drbg import OsRandom, RandomSource, SeededRandom
from cvm.crypto.rsa_pss import RsaPrivateKey, new_private_key, public_key_der
from cvm.crypto.x509_build import (
    OID_AUTHORITY_KEY_ID,
    OID_BASIC_CONSTRAINTS,
    OID_CRL_DISTRIBUTION_POINTS,
    OID_KEY_USAGE,
    OID_SUBJECT_KEY_ID,
    DistinguishedName,
    Extension,
    authority_key_id,
    basic_constraints_ca,
    crl_distribution_point,
    der_octet_string,
    key_identifier,
    key_usage,
    sign_rsassa_pss,
    tbs_cert_list,
    tbs_certificate,
)
from cvm.errors import UsageError

Clock = Callable[[], datetime]
DEFAULT_SEED = b"cvm emulated AMD vendor, default seed"
ARK_SERIAL = 0x10000
ASK_SERIAL = 0x10001
ROOT_NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
ROOT_LIFETIME = timedelta(days=365 * 25 + 6)
CRL_LIFETIME = timedelta(days=7)
RSA_KEY_BITS = 4096


def system_clock() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def emulated_name(common_name: str) -> DistinguishedName:
    return DistinguishedName(
        common_name=common_name,
        organization_name=EMULATED_ORGANIZATION,
        organizational_unit_name=EMULATED_ORGANIZATIONAL_UNIT,
    )


def _crl_point(product: Product) -> Extension:
    return Extension(OID_CRL_DISTRIBUTION_POINTS, crl_distribution_point(product.crl_url))


@dataclass(frozen=True)
class EmulatedRoot:
    """One product's ARK and ASK: private keys and certificates (DER)."""

    product: Product
    ark_key: RsaPrivateKey = field(repr=False)
    ark_certificate: bytes = field(repr=False)
    ask_key: RsaPrivateKey = field(repr=False)
    ask_certificate: bytes = field(repr=False)

    def fingerprint(self) -> str:
        """SHA-256 of the ARK certificate (hex): the value a relying party pins."""
        return hashlib.sha256(self.ark_certificate).hexdigest()


def _ark_certificate(product: Product, key: RsaPrivateKey, salt: bytes) -> bytes:
    name = emulated_name(product.ark_common_name)
    spki = public_key_der(key.public_key())
    tbs = tbs_certificate(
        serial=ARK_SERIAL,
        issuer=name,
        subject=name,
        not_before=ROOT_NOT_BEFORE,
        not_after=ROOT_NOT_BEFORE + ROOT_LIFETIME,
        spki_der=spki,
        extensions=[
            Extension(OID_KEY_USAGE, key_usage(cert_sign=True, crl_sign=True), True),
            Extension(OID_SUBJECT_KEY_ID, der_octet_string(key_identifier(spki))),
            Extension(OID_BASIC_CONSTRAINTS, basic_constraints_ca(None), True),
            _crl_point(product),
        ],
    )
    return sign_rsassa_pss(tbs, key, salt)


def _ask_certificate(
    product: Product, ark_key: RsaPrivateKey, key: RsaPrivateKey, salt: bytes
) -> bytes:
    spki = public_key_der(key.public_key())
    not_before = ROOT_NOT_BEFORE + timedelta(hours=1)
    tbs = tbs_certificate(
        serial=ASK_SERIAL,
        issuer=emulated_name(product.ark_common_name),
        subject=emulated_name(product.ask_common_name),
        not_before=not_before,
        not_after=not_before + ROOT_LIFETIME,
        spki_der=spki,
        extensions=[
            Extension(OID_SUBJECT_KEY_ID, der_octet_string(key_identifier(spki))),
            Extension(
                OID_AUTHORITY_KEY_ID,
                authority_key_id(key_identifier(public_key_der(ark_key.public_key()))),
            ),
            Extension(OID_BASIC_CONSTRAINTS, basic_constraints_ca(0), True),
            Extension(OID_KEY_USAGE, key_usage(cert_sign=True, crl_sign=False), True),
            _crl_point(product),
        ],
    )
    return sign_rsassa_pss(tbs, ark_key, salt)


def generate_root(product: Product | str, random: RandomSource | None = None) -> EmulatedRoot:
    """A new ARK and ASK for ``product``: fresh RSA-4096 keys (``cryptography``, the operating
    system's generator) and their certificates, the ARK self-signed, the ASK signed by it."""
    chosen = product_named(product) if isinstance(product, str) else product
    salts = random or OsRandom()
    ark_key = new_private_key(RSA_KEY_BITS)
    ask_key = new_private_key(RSA_KEY_BITS)
    return EmulatedRoot(
        chosen,
        ark_key,
        _ark_certificate(chosen, ark_key, salts(48)),
        ask_key,
        _ask_certificate(chosen, ark_key, ask_key, salts(48)),
    )


@lru_cache(maxsize=8)
def ephemeral_root(product: str) -> EmulatedRoot:
    """A root that lives as long as this process (the demo's and the tests'): made once per
    product and process, trusted by nothing that does not hold it."""
    return generate_root(product)


class RootAuthority:
    """ARK and ASK of one product, their certificates and the ARK's CRL."""

    def __init__(
        self,
        product: Product | str = "Milan",
        seed: bytes = DEFAULT_SEED,
        clock: Clock = system_clock,
        random: RandomSource | None = None,
        root: EmulatedRoot | None = None,
    ) -> None:
        self.product = product_named(product) if isinstance(product, str) else product
        if root is None:
            root = ephemeral_root(self.product.name)
        if root.product != self.product:
            raise UsageError(f"the root is {root.product.name}'s, not {self.product.name}'s")
        self.root = root
        self.seed = bytes(seed)
        self.clock = clock
        self.random: RandomSource = random or SeededRandom(self.seed, b"vendor/salts")
        self.ark_key, self.ark_certificate = root.ark_key, root.ark_certificate
        self.ask_key, self.ask_certificate = root.ask_key, root.ask_certificate
        self.ark_name = emulated_name(self.product.ark_common_name)
        self.ask_name = emulated_name(self.product.ask_common_name)
        self.ark_key_id = key_identifier(public_key_der(self.ark_key.public_key()))
        self._revoked: dict[int, datetime] = {}
        self._crl_number = 0

    def revoke(self, serial: int = ASK_SERIAL) -> None:
        """Put a certificate issued by the ARK (by default the ASK) on the CRL."""
        self._revoked.setdefault(serial, self.clock())

    def crl(self) -> bytes:
        """The current CRL (DER), signed by the ARK, valid for seven days from now."""
        self._crl_number += 1
        now = self.clock()
        tbs = tbs_cert_list(
            issuer=self.ark_name,
            this_update=now,
            next_update=now + CRL_LIFETIME,
            revoked=sorted(self._revoked.items()),
            crl_number=self._crl_number,
            authority_key=self.ark_key_id,
        )
        return sign_rsassa_pss(tbs, self.ark_key, self.random(48))
