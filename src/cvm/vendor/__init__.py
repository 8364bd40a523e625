"""The emulated AMD PKI: ARK -> ASK -> VCEK per product, chip and TCB (AMD 57230).

Emulated evidence is unmistakable: every name says "emulated" and no AMD root ever
matches it. ``derive_vcek_private_key`` is the derivation the emulated PSP runs.
"""

from cvm.crypto.vcek_key import derive_vcek_private_key
from cvm.vendor.authority import DEFAULT_SEED, RootAuthority
from cvm.vendor.kds import ChipFuses, KeyDistributionService
from cvm.vendor.pki import Vendor, default_vendor
from cvm.vendor.product import PRODUCTS, Product, product_named

__all__ = [
    "DEFAULT_SEED", "PRODUCTS", "ChipFuses", "KeyDistributionService", "Product",
    "RootAuthority", "Vendor", "default_vendor", "derive_vcek_private_key", "product_named",
]
