"""KDFa, KDFe, HMAC and AES-CFB of TPM 2.0 against definitions written here from the
specification (Part 1 section 11.4) and the standard library, at their bounds."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import re

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cvm.crypto.tpm_kdf import (
    aes_cfb_decrypt,
    aes_cfb_encrypt,
    hash_algorithm,
    hmac,
    kdfa,
    kdfe,
    verify_hmac,
)
from cvm.errors import IntegrityError, UsageError

HASHES = ("sha1", "sha256", "sha384", "sha512")


def _message(text: str) -> str:
    return "^" + re.escape(text) + "$"


def _mask(data: bytes, bits: int) -> bytes:
    out = bytearray(data[: (bits + 7) // 8])
    if bits % 8:
        out[0] &= (1 << (bits % 8)) - 1
    return bytes(out)


def _kdfa(name: str, key: bytes, label: bytes, u: bytes, v: bytes, bits: int) -> bytes:
    """SP 800-108 counter mode, as Part 1 11.4.10.2 writes it (label zero-terminated once)."""
    label = label if label.endswith(b"\x00") else label + b"\x00"
    out, counter = b"", 1
    while len(out) * 8 < bits:
        message = counter.to_bytes(4, "big") + label + u + v + bits.to_bytes(4, "big")
        out += std_hmac.new(key, message, name).digest()
        counter += 1
    return _mask(out, bits)


def _kdfe(name: str, z: bytes, label: bytes, u: bytes, v: bytes, bits: int) -> bytes:
    label = label if label.endswith(b"\x00") else label + b"\x00"
    out, counter = b"", 1
    while len(out) * 8 < bits:
        out += hashlib.new(name, counter.to_bytes(4, "big") + z + label + u + v).digest()
        counter += 1
    return _mask(out, bits)


def test_each_hash_name_is_that_hash() -> None:
    for name in HASHES:
        algorithm = hash_algorithm(name)
        assert algorithm.name == name and algorithm.digest_size == hashlib.new(name).digest_size
    with pytest.raises(UsageError, match=_message("unsupported hash algorithm 'md5'")):
        hash_algorithm("md5")


@pytest.mark.parametrize("name", HASHES)
def test_hmac_is_over_the_parts_in_order(name: str) -> None:
    expected = std_hmac.new(b"key", b"abcdef", name).digest()
    assert hmac(name, b"key", b"ab", b"cd", b"ef") == expected
    assert hmac(name, b"key", b"abcdef") == expected
    assert hmac(name, b"key") == std_hmac.new(b"key", b"", name).digest()
    verify_hmac(name, b"key", expected, b"abc", b"def")


def test_a_wrong_hmac_is_refused_detail_free() -> None:
    good = std_hmac.new(b"key", b"message", "sha256").digest()
    for key, tag, parts in ((b"key", good, (b"messagE",)), (b"kez", good, (b"message",)),
                            (b"key", good[:-1], (b"message",)),
                            (b"key", good, (b"mess", b"agE"))):
        with pytest.raises(IntegrityError, match=_message("HMAC does not match")):
            verify_hmac("sha256", key, tag, *parts)
    with pytest.raises(IntegrityError):
        verify_hmac("sha384", b"key", good, b"message")


@pytest.mark.parametrize("name", HASHES)
@pytest.mark.parametrize("bits", [1, 7, 8, 12, 128, 160, 255, 256, 257, 513, 1024, 1025])
def test_kdfa_is_the_counter_mode_definition(name: str, bits: int) -> None:
    got = kdfa(name, b"seed" * 8, b"STORAGE", b"name-u", b"name-v", bits=bits)
    assert got == _kdfa(name, b"seed" * 8, b"STORAGE", b"name-u", b"name-v", bits)
    assert len(got) == (bits + 7) // 8


def test_kdfa_terminates_the_label_once_and_the_empty_label_too() -> None:
    plain = kdfa("sha256", b"k", b"INTEGRITY", b"", b"", bits=256)
    assert kdfa("sha256", b"k", b"INTEGRITY\x00", b"", b"", bits=256) == plain
    assert plain == std_hmac.new(
        b"k", b"\x00\x00\x00\x01INTEGRITY\x00\x00\x00\x01\x00", "sha256").digest()
    assert kdfa("sha256", b"k", b"", b"u", b"", bits=256) == std_hmac.new(
        b"k", b"\x00\x00\x00\x01\x00u\x00\x00\x01\x00", "sha256").digest()


def test_an_odd_bit_count_clears_the_high_bits_of_the_first_byte() -> None:
    full = kdfa("sha256", b"k", b"X", b"", b"", bits=16)
    odd = _kdfa("sha256", b"k", b"X", b"", b"", 12)
    assert kdfa("sha256", b"k", b"X", b"", b"", bits=12) == odd
    assert odd[0] < 16 and len(odd) == 2
    assert kdfa("sha256", b"k", b"X", b"", b"", bits=1)[0] in (0, 1)
    # the bit count is part of the input: 12 bits are not 16 bits masked
    assert odd != _mask(full, 12)


@pytest.mark.parametrize("function", [kdfa, kdfe])
def test_the_bit_count_bounds(function: object) -> None:
    derive = function  # type: ignore[assignment]
    name = "KDFa" if function is kdfa else "KDFe"
    for bits in (0, -8, 0xFFFF * 8 + 1):
        with pytest.raises(UsageError, match=_message(f"{name}: {bits} bits is out of range")):
            derive("sha256", b"k", b"L", b"", b"", bits=bits)  # type: ignore[operator]
    assert len(derive("sha512", b"k", b"L", b"", b"", bits=0xFFFF * 8)) == 0xFFFF  # type: ignore[operator]
    assert len(derive("sha256", b"k", b"L", b"", b"", bits=1)) == 1  # type: ignore[operator]


@pytest.mark.parametrize("name", HASHES)
@pytest.mark.parametrize("bits", [1, 12, 256, 257, 600, 1024])
def test_kdfe_is_the_concatenation_kdf(name: str, bits: int) -> None:
    got = kdfe(name, b"z" * 48, b"DUPLICATE", b"party-u", b"party-v", bits=bits)
    assert got == _kdfe(name, b"z" * 48, b"DUPLICATE", b"party-u", b"party-v", bits)
    assert kdfe(name, b"z" * 48, b"DUPLICATE\x00", b"party-u", b"party-v", bits=bits) == got


def test_aes_cfb_is_full_block_feedback() -> None:
    """NIST SP 800-38A F.3.13 (CFB128-AES128.Encrypt), and a partial last block."""
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    iv = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    plaintext = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
    ciphertext = bytes.fromhex("3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b")
    assert aes_cfb_encrypt(key, iv, plaintext) == ciphertext
    assert aes_cfb_decrypt(key, iv, ciphertext) == plaintext
    assert aes_cfb_encrypt(key, iv, plaintext[:20]) == ciphertext[:20]
    assert aes_cfb_decrypt(key, iv, ciphertext[:20]) == plaintext[:20]


@pytest.mark.parametrize("size", [16, 24, 32])
def test_aes_cfb_takes_each_aes_key_size(size: int) -> None:
    key, iv, data = bytes(range(size)), bytes(range(16, 32)), b"secret bytes of a TPM object"
    block = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    first = bytes(a ^ b for a, b in zip(block.update(iv), data[:16], strict=True))
    encrypted = aes_cfb_encrypt(key, iv, data)
    assert encrypted[:16] == first
    assert aes_cfb_decrypt(key, iv, encrypted) == data


def test_aes_cfb_refuses_other_key_and_iv_sizes() -> None:
    message = _message("AES-CFB needs a 128/192/256-bit key and a 16-byte IV")
    for key, iv in ((bytes(15), bytes(16)), (bytes(17), bytes(16)), (bytes(33), bytes(16)),
                    (bytes(16), bytes(15)), (bytes(16), bytes(17)), (bytes(8), bytes(8))):
        with pytest.raises(UsageError, match=message):
            aes_cfb_encrypt(key, iv, b"x")
        with pytest.raises(UsageError, match=message):
            aes_cfb_decrypt(key, iv, b"x")
