"""Collateral on disk: VCEK certificates and the ARK's CRL, kept so appraisal works offline.

A relying party fetches a chip's VCEK (per TCB) and the product's CRL from AMD's KDS once and
appraises from the cache afterwards — with no network, and with the same checks: a cached CRL
past its nextUpdate is reported as stale by the chain verifier, never silently trusted. Files
are named ``vcek-<chip id hex>-<tcb hex>.der`` and ``crl-<product>.der``.
"""

from __future__ import annotations

from pathlib import Path

from cvm.errors import UsageError
from cvm.files import PUBLIC_MODE, write_atomically
from cvm.formats.snp.tcb_version import TcbVersion

PRODUCTS = ("Milan", "Genoa", "Turin")


class CollateralCache:
    """A directory of DER files; writes are atomic (write, then rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _write(self, name: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(self.directory / name, data, PUBLIC_MODE)

    def _read(self, name: str) -> bytes | None:
        path = self.directory / name
        return path.read_bytes() if path.is_file() else None

    @staticmethod
    def _vcek_name(chip_id: bytes, tcb: TcbVersion) -> str:
        return f"vcek-{chip_id.hex()}-{tcb.to_bytes().hex()}.der"

    @staticmethod
    def _crl_name(product: str) -> str:
        if product not in PRODUCTS:
            raise UsageError(f"unknown product {product!r}; known: {', '.join(PRODUCTS)}")
        return f"crl-{product}.der"

    def put_vcek(self, chip_id: bytes, tcb: TcbVersion, der: bytes) -> None:
        self._write(self._vcek_name(chip_id, tcb), der)

    def vcek(self, chip_id: bytes, tcb: TcbVersion) -> bytes | None:
        return self._read(self._vcek_name(chip_id, tcb))

    def put_crl(self, product: str, der: bytes) -> None:
        self._write(self._crl_name(product), der)

    def crl(self, product: str) -> bytes | None:
        return self._read(self._crl_name(product))
