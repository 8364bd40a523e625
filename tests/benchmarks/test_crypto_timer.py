"""The benchmarks' cryptography timer: what it counts as cryptography and how it prices it."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from crypto_timer import HASHING, SMALL_HASH, CryptoTimer
from cvm.crypto import aead


def test_small_hash_calls_are_counted_by_kind_and_priced() -> None:
    original = hashlib.sha256
    with CryptoTimer() as timer:
        for _ in range(100):
            hashlib.sha256(bytes(36)).digest()
        h = hashlib.sha256()
        h.update(bytes(100))
        h.update(bytes(100))
    assert hashlib.sha256 is original  # removed on exit
    assert timer.small_hashes == {("new", "sha256", 36): 100, ("digest", "sha256", 0): 100,
                                  ("new", "sha256", 0): 1, ("update", "sha256", 100): 2}
    assert timer.calls[HASHING] == 203
    assert timer.seconds[HASHING] == 0.0  # none of them timed one by one
    priced = timer.corrected()[HASHING]
    assert priced > 0.0
    assert timer.unit_cost("new", "sha256", 36) > 0.0


def test_large_hash_inputs_and_primitives_are_timed() -> None:
    with CryptoTimer() as timer:
        hashlib.sha256(bytes(SMALL_HASH + 1)).digest()
        aead.encrypt(bytes(32), bytes(12), bytes(1 << 16), b"")
    assert timer.small_hashes == {("digest", "sha256", 0): 1}
    assert timer.seconds[HASHING] > 0.0
    assert timer.calls["AES-GCM (guest messages)"] == 1


def test_hashes_inside_a_timed_primitive_count_once() -> None:
    with CryptoTimer() as timer:
        timer.run("outer", lambda: hashlib.sha256(b"inside").digest())
    assert timer.calls == {"outer": 1}
    assert not timer.small_hashes


@pytest.mark.parametrize("operation", ["new", "update", "digest", "hexdigest"])
def test_every_small_operation_has_a_price(operation: str) -> None:
    assert CryptoTimer().unit_cost(operation, "sha384", 64) > 0.0


def test_the_memory_engines_block_cipher_is_priced_by_the_bytes_it_ciphered() -> None:
    from cvm.crypto.memory_cipher import XexMemoryCipher

    engine = XexMemoryCipher(bytes(16))
    with CryptoTimer() as timer:
        engine.decrypt(0x5000, engine.encrypt(0x5000, bytes(2 * 4096)))
    assert timer.memory_bytes == 4 * 4096
    assert timer.calls["memory engine AES (guest pages)"] == 2
    assert timer.memory_block_cipher_seconds() > 0.0


def test_parsing_in_the_crypto_package_is_not_counted_as_cryptography() -> None:
    from crypto_timer import PARSING
    from cvm.crypto import x509_chain, xts

    assert "x509_chain.parse_certificate" in PARSING
    original_parse, original_xts = x509_chain.parse_certificate, xts.XtsCipher.encrypt_sectors
    with CryptoTimer():
        assert x509_chain.parse_certificate is original_parse  # left as it is
        assert xts.XtsCipher.encrypt_sectors is not original_xts  # a primitive: wrapped
    for entry in PARSING:  # every entry names something that exists
        module, *path = entry.split(".")
        owner: object = __import__(f"cvm.crypto.{module}", fromlist=["_"])
        for part in path:
            owner = getattr(owner, part)


def test_the_af_splitter_is_timed_whole_and_its_hashes_priced_apart() -> None:
    from crypto_timer import CATEGORIES
    from cvm.disk import keyslot
    from cvm.formats.luks2 import anti_forensic

    original_merge, original_hashlib = keyslot.af_merge, anti_forensic.hashlib
    key = bytes(range(64))
    material = anti_forensic.af_split(key, 4000, "sha512", bytes)
    with CryptoTimer() as timer:
        assert keyslot.af_merge is not original_merge  # rebound where it was imported by name
        assert keyslot.af_merge(material, 64, 4000, "sha512") == key
        assert len(anti_forensic.af_split(bytes(40), 3, "sha256", bytes)) == 3 * 40
    assert keyslot.af_merge is original_merge and anti_forensic.hashlib is original_hashlib
    assert timer.calls == {CATEGORIES["af"]: 2}  # its 4,000 + 4 hashes not counted one by one
    assert not timer.small_hashes
    # one 68-byte SHA-512 per stripe but the last; two blocks of 32 and 8 bytes per SHA-256 stripe
    assert timer.af_hashes == {("sha512", 68): 3999, ("sha256", 36): 2, ("sha256", 12): 2}
    assert 0.0 < timer.af_hash_seconds() < timer.corrected()[CATEGORIES["af"]]
