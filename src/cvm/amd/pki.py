"""``Vendor``: the emulated AMD of one product — roots, key distribution, chip manufacturing.

Ties :class:`~cvm.amd.authority.RootAuthority` (ARK, ASK, CRL; AMD 57230) to
:class:`~cvm.amd.kds.KeyDistributionService` (VCEKs; AMD 57230 KDS). A test or the
emulated host makes a ``Vendor``, manufactures chips (their fuses go to the emulated PSP),
and hands relying parties :meth:`Vendor.trust_anchor` as the root they choose to trust. An
installation's own vendor, whose root outlives the process, comes from
:meth:`cvm.amd.root_store.RootStore.vendor`.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from cvm.amd.authority import DEFAULT_SEED, Clock, EmulatedRoot, RootAuthority, system_clock
from cvm.amd.kds import ChipFuses, KeyDistributionService
from cvm.amd.product import Product, product_named
from cvm.crypto.drbg import RandomSource
from cvm.formats.snp.tcb_version import TcbVersion


class Vendor:
    """The emulated AMD for one product line: its root (by default this process's ephemeral
    one) and the chips it makes, reproducible from ``seed``."""

    def __init__(
        self,
        product: Product | str = "Milan",
        seed: bytes = DEFAULT_SEED,
        clock: Clock = system_clock,
        random: RandomSource | None = None,
        root: EmulatedRoot | None = None,
    ) -> None:
        self.authority = RootAuthority(product, seed, clock, random, root)
        self.product = self.authority.product
        self.kds = KeyDistributionService(self.authority)

    @property
    def ark_certificate(self) -> bytes:
        return self.authority.ark_certificate

    @property
    def ask_certificate(self) -> bytes:
        return self.authority.ask_certificate

    def ark_fingerprint(self) -> str:
        """SHA-256 of the ARK certificate (hex): the value a relying party pins."""
        return hashlib.sha256(self.authority.ark_certificate).hexdigest()

    def trust_anchor(self) -> tuple[str, str]:
        """(product name, ARK SHA-256) — what a verifier is told to trust for this vendor."""
        return self.product.name, self.ark_fingerprint()

    def manufacture_chip(self, index: int = 0) -> ChipFuses:
        return self.kds.manufacture_chip(index)

    def vcek_certificate(self, chip_id: bytes, tcb: TcbVersion) -> bytes:
        return self.kds.vcek_certificate(chip_id, tcb)

    def cert_chain(self) -> bytes:
        return self.kds.cert_chain()

    def crl(self) -> bytes:
        return self.authority.crl()

    def revoke_ask(self) -> None:
        self.authority.revoke()


@lru_cache(maxsize=8)
def default_vendor(product: str) -> Vendor:
    """This process's vendor: the ephemeral root and the default seed (the demo's)."""
    return Vendor(product_named(product), DEFAULT_SEED, system_clock)
