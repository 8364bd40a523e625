"""Trust roots as data: which ARK certificates (by SHA-256 fingerprint) a verifier accepts.

AMD 57230 (certificate chain): every SEV-SNP chain ends in the product's ARK; a relying party must
decide which ARKs it trusts. cvm ships AMD's as *facts* — the SHA-256 fingerprints of the
real ARK certificates (computed from the certificates AMD's KDS serves, copies of which are
in the project's test vectors) — never as certificates: the certificates travel with the
evidence and are accepted only if they hash to a pinned value.

An emulated root is trusted only when a caller adds it explicitly (``TrustRoots.of``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cvm.errors import UsageError

HEX_DIGITS = "0123456789abcdef"
# SHA-256 of AMD's SEV-SNP ARK certificates (DER), KDS /vcek/v1/{product}/cert_chain.
AMD_ARK_SHA256: Mapping[str, str] = {
    "Milan": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    "Genoa": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    "Turin": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
}


@dataclass(frozen=True)
class TrustRoots:
    """ARK fingerprints (lower-case hex SHA-256 of the DER) mapped to their product name."""

    roots: Mapping[str, str]
    label: str = "custom"

    def __post_init__(self) -> None:
        for fingerprint in self.roots:
            if len(fingerprint) != 64 or fingerprint.strip(HEX_DIGITS):
                raise UsageError(f"not a lower-case SHA-256 hex fingerprint: {fingerprint!r}")

    @classmethod
    def amd(cls) -> TrustRoots:
        """AMD's real SEV-SNP roots (Milan, Genoa, Turin)."""
        return cls({fp: product for product, fp in AMD_ARK_SHA256.items()}, "amd")

    @classmethod
    def of(cls, anchors: Iterable[tuple[str, str]], label: str = "custom") -> TrustRoots:
        """Roots from (product, fingerprint) pairs, e.g. ``[vendor.trust_anchor()]``."""
        return cls({fp.lower().replace(":", ""): product for product, fp in anchors}, label)

    def union(self, other: TrustRoots) -> TrustRoots:
        return TrustRoots({**self.roots, **other.roots}, f"{self.label}+{other.label}")

    def product_of(self, fingerprint: str) -> str | None:
        """The product of a trusted ARK, or None when the ARK is not trusted."""
        return self.roots.get(fingerprint.lower())

    def __hash__(self) -> int:
        return hash((self.label, tuple(sorted(self.roots.items()))))
