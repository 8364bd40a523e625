"""KDFa / KDFe / AES-CFB / HMAC of TPM 2.0 (Part 1 section 11.4) and the TPM key helpers."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.crypto.tpm_kdf import aes_cfb_decrypt, aes_cfb_encrypt, kdfa, kdfe, verify_hmac
from cvm.crypto.tpm_keys import ecc_from_seed, ecc_point, ecdh_x, rsa_from_seed
from cvm.errors import IntegrityError


def _kdfa_reference(key: bytes, label: bytes, u: bytes, v: bytes, bits: int) -> bytes:
    out, counter = b"", 1
    while len(out) * 8 < bits:
        message = counter.to_bytes(4, "big") + label + b"\x00" + u + v + bits.to_bytes(4, "big")
        out += hmac.new(key, message, hashlib.sha256).digest()
        counter += 1
    return out[: bits // 8]


@given(st.binary(max_size=40), st.binary(max_size=20), st.binary(max_size=20),
       st.integers(1, 80).map(lambda n: n * 8))
def test_kdfa_matches_the_definition(key: bytes, u: bytes, v: bytes, bits: int) -> None:
    assert kdfa("sha256", key, b"STORAGE", u, v, bits=bits) == _kdfa_reference(
        key, b"STORAGE", u, v, bits)
    assert kdfa("sha256", key, b"STORAGE\x00", u, v, bits=bits) == kdfa(
        "sha256", key, b"STORAGE", u, v, bits=bits)


def test_kdfa_odd_bits_and_kdfe() -> None:
    assert kdfa("sha256", b"k", b"X", b"", b"", bits=12)[0] < 16
    z, u, v = b"z" * 32, b"u", b"v"
    expected = hashlib.sha256(b"\x00\x00\x00\x01" + z + b"IDENTITY\x00" + u + v).digest()
    assert kdfe("sha256", z, b"IDENTITY", u, v, bits=256) == expected


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
       st.binary(max_size=100))
def test_cfb_round_trip(key: bytes, iv: bytes, data: bytes) -> None:
    assert aes_cfb_decrypt(key, iv, aes_cfb_encrypt(key, iv, data)) == data


def test_verify_hmac_refuses() -> None:
    good = hmac.new(b"k", b"m", hashlib.sha256).digest()
    verify_hmac("sha256", b"k", good, b"m")
    with pytest.raises(IntegrityError):
        verify_hmac("sha256", b"k", good, b"n")


def test_seed_derived_keys_are_deterministic() -> None:
    n, p = rsa_from_seed(b"s" * 32, b"ctx", 1024, 0)
    assert rsa_from_seed(b"s" * 32, b"ctx", 1024, 0) == (n, p)
    assert rsa_from_seed(b"t" * 32, b"ctx", 1024, 0)[0] != n
    modulus, prime = int.from_bytes(n, "big"), int.from_bytes(p, "big")
    assert modulus % prime == 0 and modulus.bit_length() == 1024
    assert pow(3, prime - 1, prime) == 1
    first = ecc_from_seed("p256", b"s" * 32, b"ctx")
    assert first == ecc_from_seed("p256", b"s" * 32, b"ctx")
    second = ecc_from_seed("p256", b"s" * 32, b"other")
    assert ecdh_x("p256", first, ecc_point("p256", second)) == ecdh_x(
        "p256", second, ecc_point("p256", first))


def test_rsa_from_seed_is_pinned() -> None:
    """The derived primes do not depend on how candidates are screened (known answer: the
    sieve only skips values with small factors, it never changes which value is found)."""
    n, p = rsa_from_seed(b"s" * 32, b"ctx", 2048, 0)
    assert hashlib.sha256(n).hexdigest() == (
        "676fd248728cc71558c3f3fd8de49d7e94c0d8c86177849ac5b813d6f342003c")
    assert int.from_bytes(n, "big") % int.from_bytes(p, "big") == 0
