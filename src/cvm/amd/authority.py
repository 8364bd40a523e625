"""The emulated AMD root of trust for one product: ARK, ASK and the ARK's revocation list.

AMD 57230 (VCEK/KDS specification), certificate chain: the AMD Root Key (ARK, RSA-4096, self-signed)
signs the AMD SEV Signing Key (ASK, RSA-4096), which signs every VCEK of the product; all
signatures are RSASSA-PSS with SHA-384 and a 48-byte salt. The ARK also signs the product's
CRL, which revokes ASKs (KDS ``/vcek/v1/{product}/crl``).

Certificates copy the real Milan ARK and ASK field by field (serials 0x10000 and 0x10001,
25-year validity, the same extensions in the same order with the same criticality), with
the emulated names of :mod:`cvm.amd.product`. Everything is derived from a seed: the
same seed gives the same keys and byte-identical certificates, which is how ``cvm report
verify --trust emulated`` knows the emulated root without anyone shipping it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cvm.amd.product import (
    EMULATED_ORGANIZATION,
    EMULATED_ORGANIZATIONAL_UNIT,
    Product,
    product_named,
)
from cvm.crypto.drbg import RandomSource, SeededRandom
from cvm.crypto.rsa_pss import RsaPrivateKey, generate_private_key, public_key_der
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


@lru_cache(maxsize=16)
def root_key_and_certificate(product: Product, seed: bytes) -> tuple[RsaPrivateKey, bytes]:
    """The ARK of ``product`` for ``seed`` and its self-signed certificate (cached)."""
    key = generate_private_key(seed, f"{product.name}/ARK", RSA_KEY_BITS)
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
    salt = SeededRandom(seed, f"vendor/{product.name}/ark-salt".encode())(48)
    return key, sign_rsassa_pss(tbs, key, salt)


@lru_cache(maxsize=16)
def signing_key_and_certificate(product: Product, seed: bytes) -> tuple[RsaPrivateKey, bytes]:
    """The ASK of ``product`` for ``seed`` and its certificate signed by the ARK (cached)."""
    ark_key, _ = root_key_and_certificate(product, seed)
    key = generate_private_key(seed, f"{product.name}/ASK", RSA_KEY_BITS)
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
    salt = SeededRandom(seed, f"vendor/{product.name}/ask-salt".encode())(48)
    return key, sign_rsassa_pss(tbs, ark_key, salt)


class RootAuthority:
    """ARK and ASK of one product, their certificates and the ARK's CRL."""

    def __init__(
        self,
        product: Product | str = "Milan",
        seed: bytes = DEFAULT_SEED,
        clock: Clock = system_clock,
        random: RandomSource | None = None,
    ) -> None:
        self.product = product_named(product) if isinstance(product, str) else product
        self.seed = bytes(seed)
        self.clock = clock
        self.random: RandomSource = random or SeededRandom(self.seed, b"vendor/salts")
        self.ark_key, self.ark_certificate = root_key_and_certificate(self.product, self.seed)
        self.ask_key, self.ask_certificate = signing_key_and_certificate(self.product, self.seed)
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
