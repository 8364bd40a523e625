"""The seeded byte source against its documented construction (hashlib's SHAKE-256): each
call is the next block, a fork is a stream of its own, and the seed is copied, not shared."""

from __future__ import annotations

import hashlib

from cvm.crypto.drbg import OsRandom, SeededRandom

SEED = b"seed \x00\xff"


def _block(label: bytes, counter: int, size: int) -> bytes:
    return hashlib.shake_256(label + b"\x00" + counter.to_bytes(8, "big") + SEED).digest(size)


def test_each_call_is_the_next_shake256_block() -> None:
    stream = SeededRandom(SEED, b"label")
    assert [stream(n) for n in (1, 32, 100)] == [
        _block(b"label", 1, 1), _block(b"label", 2, 32), _block(b"label", 3, 100)]
    assert stream.counter == 3


def test_the_label_defaults_to_empty() -> None:
    assert SeededRandom(SEED)(48) == _block(b"", 1, 48)


def test_the_first_block_is_fixed() -> None:
    # SHAKE-256(b"cvm" 00 0000000000000001 b"seed"), written out so a change of construction
    # (which would change every seeded build) cannot pass unnoticed
    assert SeededRandom(b"seed", b"cvm")(16).hex() == hashlib.shake_256(
        bytes.fromhex("63766d00" "0000000000000001") + b"seed").hexdigest(16)


def test_a_fork_is_the_labelled_stream_and_leaves_its_parent_alone() -> None:
    parent = SeededRandom(SEED, b"a")
    parent(8)
    child = parent.fork(b"b")
    assert (child.seed, child.label, child.counter) == (SEED, b"a/b", 0)
    assert child(32) == _block(b"a/b", 1, 32)
    assert parent(32) == _block(b"a", 2, 32)
    assert SeededRandom(SEED).fork(b"x").label == b"/x"


def test_the_seed_and_label_are_copies() -> None:
    seed, label = bytearray(SEED), bytearray(b"label")
    stream = SeededRandom(seed, label)
    seed[0] ^= 1
    label[0] ^= 1
    assert isinstance(stream.seed, bytes) and isinstance(stream.label, bytes)
    assert stream(16) == _block(b"label", 1, 16)


def test_the_operating_system_source_gives_the_size_asked() -> None:
    source = OsRandom()
    assert [len(source(n)) for n in (0, 1, 64)] == [0, 1, 64]
    assert source(32) != source(32)
