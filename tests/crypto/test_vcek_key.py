"""VCEK derivation: deterministic, and a different TCB, chip or product gives another key."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from cvm.crypto import amd_ecdsa
from cvm.crypto.vcek_key import derive_vcek_private_key, hkdf_sha384
from cvm.errors import UsageError
from cvm.formats.snp.tcb_version import TcbVersion

SECRET = bytes(range(64))


def _public(secret: bytes, tcb: TcbVersion, product: str) -> tuple[int, int]:
    return amd_ecdsa.public_key_coordinates(
        derive_vcek_private_key(secret, tcb, product).public_key()
    )


def test_derivation_depends_on_every_input() -> None:
    tcb = TcbVersion(boot_loader=3, snp=8, microcode=115)
    base = _public(SECRET, tcb, "Milan")
    assert base == _public(SECRET, tcb, "Milan")
    assert base != _public(SECRET, TcbVersion(boot_loader=3, snp=7, microcode=115), "Milan")
    assert base != _public(bytes(reversed(SECRET)), tcb, "Milan")
    assert base != _public(SECRET, tcb, "Genoa")


def test_short_secret_refused() -> None:
    with pytest.raises(UsageError):
        derive_vcek_private_key(bytes(16), TcbVersion(), "Milan")


def test_hkdf_rfc5869_structure() -> None:
    # RFC 5869: OKM = T(1) || T(2) ..., T(i) = HMAC(PRK, T(i-1) || info || i).
    prk = hmac.new(b"salt", b"ikm", hashlib.sha384).digest()
    t1 = hmac.new(prk, b"info\x01", hashlib.sha384).digest()
    t2 = hmac.new(prk, t1 + b"info\x02", hashlib.sha384).digest()
    assert hkdf_sha384(b"ikm", b"salt", b"info", 64) == (t1 + t2)[:64]
