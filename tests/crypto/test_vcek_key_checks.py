"""The VCEK derivation against ``cryptography``'s own HKDF (RFC 5869): the exact scalar, the
HKDF at every length around its 48-byte blocks, and each refusal at its edge."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cvm.crypto.amd_ecdsa import P384_ORDER
from cvm.crypto.vcek_key import derive_vcek_private_key, derive_vcek_scalar, hkdf_sha384
from cvm.errors import UsageError
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion

SECRET = bytes(range(100, 164))
MILAN_TCB = TcbVersion(boot_loader=3, tee=0, snp=8, microcode=115)
TURIN_TCB = TcbVersion(fmc=1, boot_loader=2, tee=3, snp=4, microcode=9, layout=TcbLayout.TURIN)


def _oracle_scalar(secret: bytes, tcb: bytes, product: str) -> int:
    """The documented derivation, written with ``cryptography``'s HKDF."""
    okm = HKDF(hashes.SHA384(), 64, b"cvm emulated VCEK v1",
               product.encode() + b"\x00" + tcb).derive(secret)
    return int.from_bytes(okm, "big") % (P384_ORDER - 1) + 1


@dataclass(frozen=True)
class _RawTcb:
    raw: bytes

    def to_bytes(self) -> bytes:
        return self.raw


@pytest.mark.parametrize(("tcb", "product"), [(MILAN_TCB, "Milan"), (TURIN_TCB, "Turin"),
                                              (TcbVersion(), "Genoa")])
def test_the_scalar_is_the_documented_hkdf(tcb: TcbVersion, product: str) -> None:
    expected = _oracle_scalar(SECRET, tcb.to_bytes(), product)
    assert derive_vcek_scalar(SECRET, tcb, product) == expected
    key = derive_vcek_private_key(SECRET, tcb, product)
    assert key.private_numbers().private_value == expected


def test_hkdf_equals_cryptography_at_every_block_edge() -> None:
    for length in (1, 47, 48, 49, 64, 96, 97, 255):
        for salt, info in ((b"salt", b"info"), (b"", b""), (bytes(200), b"\x00\x01")):
            oracle = HKDF(hashes.SHA384(), length, salt or None, info).derive(b"input key")
            assert hkdf_sha384(b"input key", salt, info, length) == oracle, (length, salt, info)


def test_the_chip_secret_is_at_least_32_bytes() -> None:
    assert derive_vcek_scalar(SECRET[:32], MILAN_TCB, "Milan") == _oracle_scalar(
        SECRET[:32], MILAN_TCB.to_bytes(), "Milan")
    with pytest.raises(UsageError, match=r"^the chip secret must be at least 32 bytes$"):
        derive_vcek_scalar(SECRET[:31], MILAN_TCB, "Milan")


def test_the_tcb_encodes_as_exactly_8_bytes() -> None:
    raw = bytes([3, 0, 0, 0, 0, 0, 8, 115])
    assert derive_vcek_scalar(SECRET, _RawTcb(raw), "Milan") == _oracle_scalar(SECRET, raw, "Milan")
    for bad in (raw[:7], raw + b"\x00", b""):
        with pytest.raises(UsageError, match=r"^TCB_VERSION must encode as 8 bytes$"):
            derive_vcek_scalar(SECRET, _RawTcb(bad), "Milan")
