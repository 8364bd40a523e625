"""The emulated key distribution service: VCEK certificates per chip and TCB version.

AMD 57230, KDS interface: ``GET /vcek/v1/{product}/{hwid}?blSPL=..&teeSPL=..
&snpSPL=..&ucodeSPL=..`` (Turin adds ``fmcSPL`` and uses the first 8 bytes of the chip ID)
returns the DER VCEK certificate for that chip at that TCB; ``/cert_chain`` returns the ASK
and ARK in PEM; ``/crl`` the ARK's CRL. The VCEK is ECDSA P-384, serial 0, CN ``SEV-VCEK``,
issued by the ASK for seven years, with only AMD's extensions (structVersion, productName,
the SPLs, hwID) in AMD's order.

The KDS knows each chip's secret from manufacturing (:class:`ChipFuses`) and derives the
VCEK public key with :func:`cvm.crypto.vcek_key.derive_vcek_private_key`, the same function
the PSP firmware runs, so it certifies exactly the key that signs the chip's reports.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import timedelta

from cvm.amd.authority import RootAuthority, emulated_name
from cvm.amd.product import EMULATED_KDS_BASE
from cvm.crypto.amd_ecdsa import PrivateKey, public_key_der
from cvm.crypto.vcek_key import derive_vcek_private_key
from cvm.crypto.x509_build import (
    Extension,
    sign_rsassa_pss,
    tbs_certificate,
)
from cvm.errors import StateError, UsageError
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.formats.snp.vcek_extensions import VcekExtensions

VCEK_SERIAL = 0
VCEK_COMMON_NAME = "SEV-VCEK"
VCEK_LIFETIME = timedelta(days=365 * 7 + 2)
CHIP_SECRET_SIZE = 64
CHIP_ID_SIZE = 64


@dataclass(frozen=True)
class ChipFuses:
    """What manufacturing burns into one chip: its product, public CHIP_ID and secret."""

    product: str
    chip_id: bytes
    chip_secret: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"ChipFuses(product={self.product!r}, chip_id={self.chip_id.hex()[:16]}...)"


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    armoured = [f"-----BEGIN {label}-----".encode(), *lines, f"-----END {label}-----".encode()]
    return b"\n".join(armoured) + b"\n"


class KeyDistributionService:
    """Issues VCEK certificates for the chips its vendor made, and serves chain and CRL."""

    def __init__(self, authority: RootAuthority) -> None:
        self.authority = authority
        self.product = authority.product
        self._chips: dict[bytes, bytes] = {}
        self._revoked_chips: set[bytes] = set()
        self._issued: dict[tuple[bytes, int], bytes] = {}

    def manufacture_chip(self, index: int) -> ChipFuses:
        """Make chip number ``index`` of this product (deterministic per vendor seed)."""
        label = f"chip/{self.product.name}/{index}".encode()
        secret = hashlib.shake_256(label + b"\x00" + self.authority.seed).digest(
            CHIP_SECRET_SIZE
        )
        chip_id = hashlib.sha512(b"cvm emulated CHIP_ID\x00" + secret).digest()
        chip_id = chip_id[: self.product.chip_id_size].ljust(CHIP_ID_SIZE, b"\x00")
        self._chips[chip_id] = secret
        return ChipFuses(self.product.name, chip_id, secret)

    def revoke_chip(self, chip_id: bytes) -> None:
        """Refuse further VCEKs for a chip (AMD stops serving a compromised part)."""
        self._revoked_chips.add(bytes(chip_id))

    def hw_id(self, chip_id: bytes) -> bytes:
        """The hwID of the KDS URL and VCEK extension: the CHIP_ID (first 8 bytes on Turin)."""
        return bytes(chip_id[: self.product.chip_id_size])

    def vcek_url(self, chip_id: bytes, tcb: TcbVersion) -> str:
        query = "&".join(
            f"{name}={value:02d}"
            for name, value in (
                ("fmcSPL", tcb.fmc), ("blSPL", tcb.boot_loader), ("teeSPL", tcb.tee),
                ("snpSPL", tcb.snp), ("ucodeSPL", tcb.microcode),
            )
            if name != "fmcSPL" or "fmc" in tcb.components()
        )
        hw_id = self.hw_id(chip_id).hex()
        return f"{EMULATED_KDS_BASE}/vcek/v1/{self.product.name}/{hw_id}?{query}"

    def vcek_private_key(self, chip_id: bytes, tcb: TcbVersion) -> PrivateKey:
        secret = self._chips.get(bytes(chip_id))
        if secret is None:
            unknown = chip_id.hex()[:16]
            raise UsageError(f"the KDS knows no {self.product.name} chip {unknown}...")
        return derive_vcek_private_key(secret, tcb, self.product.name)

    def vcek_certificate(self, chip_id: bytes, tcb: TcbVersion) -> bytes:
        """The DER VCEK certificate of ``chip_id`` at ``tcb`` (same bytes on every request)."""
        chip_id = bytes(chip_id)
        if chip_id in self._revoked_chips:
            raise StateError(f"the KDS no longer issues VCEKs for chip {chip_id.hex()[:16]}...")
        if tcb.layout is not self.product.tcb_layout:
            layout = self.product.tcb_layout.name
            raise UsageError(f"{self.product.name} TCBs use the {layout} layout")
        key = (chip_id, tcb.to_int())
        if key not in self._issued:
            public = self.vcek_private_key(chip_id, tcb).public_key()
            claims = VcekExtensions(self.product.vcek_product_name, tcb, self.hw_id(chip_id))
            now = self.authority.clock()
            tbs = tbs_certificate(
                serial=VCEK_SERIAL,
                issuer=self.authority.ask_name,
                subject=emulated_name(VCEK_COMMON_NAME),
                not_before=now,
                not_after=now + VCEK_LIFETIME,
                spki_der=public_key_der(public),
                extensions=[Extension(oid, value) for oid, value in claims.to_extensions()],
            )
            salt = self.authority.random(48)
            self._issued[key] = sign_rsassa_pss(tbs, self.authority.ask_key, salt)
        return self._issued[key]

    def cert_chain(self) -> bytes:
        """``/cert_chain``: PEM of the ASK then the ARK."""
        return _pem("CERTIFICATE", self.authority.ask_certificate) + _pem(
            "CERTIFICATE", self.authority.ark_certificate
        )

    def crl(self) -> bytes:
        return self.authority.crl()
