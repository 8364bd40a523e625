"""The LUKS anti-forensic information splitter (AF split and merge).

LUKS1 On-Disk Format Specification v1.2.3, section 2.4 ("AF-Splitter"), figures 4 and 5; LUKS2
keeps it unchanged as ``af`` type ``luks1`` (LUKS2 on-disk format v1.1.4, table 3.1). A key of
``n`` bytes becomes ``stripes`` stripes of ``n`` bytes: ``d_0 = 0``, ``d_k = H(d_{k-1} xor
s_k)`` for the first ``stripes - 1`` random stripes, and the last stripe is ``d xor key``.
``H`` is the diffuser: every digest-sized block ``i`` of the buffer (the last may be short)
becomes the first bytes of ``hash(be32(i) || block_i)``.

Public API: :func:`af_split` (``random`` supplies the ``stripes - 1`` random stripes) and
:func:`af_merge`; :func:`af_size` is the split size, rounded to 512-byte sectors as on disk.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

from cvm.errors import FormatError, UsageError

SECTOR_SIZE = 512


def af_size(key_size: int, stripes: int) -> int:
    """Bytes the split key occupies in a keyslot area, rounded up to whole sectors."""
    size = key_size * stripes
    return -(-size // SECTOR_SIZE) * SECTOR_SIZE


def _chain(stripes: bytes | memoryview, size: int, hash_name: str) -> int:
    """``d_n`` of the chain ``d_0 = 0``, ``d_k = H(d_{k-1} xor s_k)`` over the ``n`` stripes
    ``s_k`` of ``size`` bytes that make up ``stripes``, as a big-endian integer.

    The XOR is bytewise and ``H`` hashes each digest-sized block on its own, so block ``i`` of
    ``d_k`` depends only on block ``i`` of ``d_{k-1}`` and of ``s_k``: the chain is one chain
    per block, each over that block's bytes of every stripe (``struct`` cuts them out). The
    block index ``be32(i)`` is folded into the integer XORed in as its top four bytes, so one
    link costs one conversion of the stripe block, the XOR, one ``to_bytes``, one hash call and
    one conversion of the digest. Every conversion between bytes and integers here is
    big-endian (Python's default).
    """
    new = getattr(hashlib, hash_name)
    width: int = new().digest_size
    from_bytes = int.from_bytes
    if size == width:  # one whole block, index 0 (a TPM2 token's SHA-512 keyslot of 64 bytes)
        block, record = 0, width + 4
        for (part,) in struct.iter_unpack(f"{width}s", stripes):
            block = from_bytes(new((block ^ from_bytes(part)).to_bytes(record)).digest())
        return block
    if size == 2 * width:  # two whole blocks (LUKS2's default: AES-XTS-512, SHA-256)
        first = second = 0
        index_one, record = 1 << (8 * width), width + 4
        for low, high in struct.iter_unpack(f"{width}s{width}s", stripes):
            first = from_bytes(new((first ^ from_bytes(low)).to_bytes(record)).digest())
            second = from_bytes(new((second ^ index_one ^ from_bytes(high)).to_bytes(record))
                                .digest())
        return first << (8 * width) | second
    digest = 0
    for start in range(0, size, width):
        length = min(width, size - start)  # the last block may be short
        index = (start // width) << (8 * length)
        cut, record = 8 * (width - length), length + 4
        block = 0
        for (part,) in struct.iter_unpack(f"{start}x{length}s{size - start - length}x", stripes):
            block = from_bytes(new((block ^ index ^ from_bytes(part)).to_bytes(record))
                               .digest()) >> cut  # a short block keeps the digest's first bytes
        digest = digest << (8 * length) | block
    return digest


def _check_hash(hash_name: str) -> None:
    if hash_name not in ("sha1", "sha256", "sha512"):
        raise UsageError(f"unsupported AF hash {hash_name!r}")


def af_split(key: bytes, stripes: int, hash_name: str, random: Callable[[int], bytes]) -> bytes:
    """Split ``key`` into ``stripes`` stripes (exactly ``len(key) * stripes`` bytes)."""
    _check_hash(hash_name)
    if stripes < 1 or not key:
        raise UsageError("AF split needs a key and at least one stripe")
    size = len(key)
    noise = random(size * (stripes - 1))
    if len(noise) != size * (stripes - 1):
        raise UsageError("AF split: the random source returned the wrong length")
    digest = _chain(noise, size, hash_name)
    return noise + (digest ^ int.from_bytes(key)).to_bytes(size)  # big-endian, as in _chain


def af_merge(material: bytes, key_size: int, stripes: int, hash_name: str) -> bytes:
    """Recover the key from ``material`` (at least ``key_size * stripes`` bytes)."""
    _check_hash(hash_name)
    if len(material) < key_size * stripes or key_size < 1 or stripes < 1:
        raise FormatError("AF merge: key material shorter than key_size * stripes")
    digest = _chain(memoryview(material)[: (stripes - 1) * key_size], key_size, hash_name)
    last = int.from_bytes(material[(stripes - 1) * key_size : stripes * key_size])
    return (digest ^ last).to_bytes(key_size)  # big-endian, as in _chain
