"""The emulated AMD PKI: ARK -> ASK -> VCEK per product, chip and TCB (AMD 57230).

Emulated evidence is unmistakable: every name says "emulated" and no AMD root ever
matches it. No emulated root is derived from anything public: each installation keeps its
own (:mod:`cvm.amd.root_store`), and a process may make an ephemeral one.
``derive_vcek_private_key`` is the derivation the emulated PSP runs.
"""

from cvm.amd.authority import (
    DEFAULT_SEED,
    EmulatedRoot,
    RootAuthority,
    ephemeral_root,
    generate_root,
)
from cvm.amd.kds import ChipFuses, KeyDistributionService
from cvm.amd.pki import Vendor, default_vendor
from cvm.amd.product import PRODUCTS, Product, product_named
from cvm.crypto.vcek_key import derive_vcek_private_key

__all__ = [
    "DEFAULT_SEED", "PRODUCTS", "ChipFuses", "EmulatedRoot", "KeyDistributionService",
    "Product", "RootAuthority", "Vendor", "default_vendor", "derive_vcek_private_key",
    "ephemeral_root", "generate_root", "product_named",
]
