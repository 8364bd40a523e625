"""The AMD EPYC products the emulated vendor certifies, and how its names say "emulated".

Product facts from AMD 57230 (KDS product names "Milan", "Genoa", "Turin"; VCEK productName
with stepping, VCEK extensions) and AMD 56860 Table 22 (CPUID_FAM_ID / CPUID_MOD_ID / CPUID_STEP of
the report). Milan is family 0x19 model 0x01, Genoa family 0x19 model 0x11, Turin family
0x1A model 0x02 (KDS CPUID table: 0x00A00F10, 0x00A10F10, 0x00B00F20).

The emulated PKI copies the structure of AMD's certificates exactly but never their names:
its organisation is ``cvm emulated AMD``, its ARK is ``ARK-<product>-emulated`` and its CRL
distribution point lives under the reserved ``.invalid`` domain, so emulated evidence cannot
be mistaken for AMD's (and AMD's pinned roots never match it).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import UsageError
from cvm.formats.snp.tcb_version import TcbLayout

EMULATED_ORGANIZATION = "cvm emulated AMD"
EMULATED_ORGANIZATIONAL_UNIT = "cvm emulation (not Advanced Micro Devices)"
EMULATED_KDS_BASE = "https://kds.cvm-emulated.invalid"


@dataclass(frozen=True)
class Product:
    """One product line: KDS name, VCEK productName, report CPUID values, TCB layout."""

    name: str
    vcek_product_name: str
    cpuid_fam_id: int
    cpuid_mod_id: int
    cpuid_step: int
    tcb_layout: TcbLayout

    @property
    def ark_common_name(self) -> str:
        return ark_common_name(self.name)

    @property
    def ask_common_name(self) -> str:
        return ask_common_name(self.name)

    @property
    def crl_url(self) -> str:
        return crl_url(self.name)

    @property
    def chip_id_size(self) -> int:
        """Bytes of CHIP_ID that are non-zero (Turin reports use only the first 8)."""
        return chip_id_size(self.tcb_layout)


# The properties above delegate to plain functions, which mutation testing reaches.
def ark_common_name(product: str) -> str:
    return f"ARK-{product}-emulated"


def ask_common_name(product: str) -> str:
    return f"SEV-{product}-emulated"


def crl_url(product: str) -> str:
    return f"{EMULATED_KDS_BASE}/vcek/v1/{product}/crl"


def chip_id_size(layout: TcbLayout) -> int:
    return 8 if layout is TcbLayout.TURIN else 64

PRODUCTS: dict[str, Product] = {
    "Milan": Product("Milan", "Milan-B0", 0x19, 0x01, 0x0, TcbLayout.MILAN_GENOA),
    "Genoa": Product("Genoa", "Genoa-B0", 0x19, 0x11, 0x0, TcbLayout.MILAN_GENOA),
    "Turin": Product("Turin", "Turin", 0x1A, 0x02, 0x0, TcbLayout.TURIN),
}


def product_named(name: str) -> Product:
    """The product called ``name`` (case-insensitive: "milan", "Milan")."""
    for product in PRODUCTS.values():
        if product.name.lower() == name.lower():
            return product
    raise UsageError(f"unknown product {name!r} (know {', '.join(PRODUCTS)})")
