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
from collections.abc import Callable

from cvm.errors import FormatError, UsageError

SECTOR_SIZE = 512


def af_size(key_size: int, stripes: int) -> int:
    """Bytes the split key occupies in a keyslot area, rounded up to whole sectors."""
    size = key_size * stripes
    return -(-size // SECTOR_SIZE) * SECTOR_SIZE


def _chain(stripes: bytes, size: int, count: int, hash_name: str) -> int:
    """``d_count`` of the chain ``d_0 = 0``, ``d_k = H(d_{k-1} xor s_k)`` over the first
    ``count`` stripes ``s_k`` of ``size`` bytes in ``stripes``, as a big-endian integer.

    One stripe costs two integer conversions, one XOR and one hash call per digest-sized block:
    the stripes are chained, so only the blocks of one stripe could be hashed side by side.
    Every conversion between bytes and integers here is big-endian (Python's default).
    """
    new = getattr(hashlib, hash_name)
    digest_size = new().digest_size
    blocks = [(index.to_bytes(4), start, start + digest_size)
              for index, start in enumerate(range(0, size, digest_size))]
    view, from_bytes, digest = memoryview(stripes), int.from_bytes, 0
    if size == 2 * digest_size:  # two whole blocks (LUKS2's default: AES-XTS-512, SHA-256)
        for start in range(0, count * size, size):
            mixed = (digest ^ from_bytes(view[start : start + size])).to_bytes(size)
            digest = from_bytes(new(b"\0\0\0\0" + mixed[:digest_size]).digest()
                                + new(b"\0\0\0\1" + mixed[digest_size:]).digest())
        return digest
    for start in range(0, count * size, size):
        mixed = (digest ^ from_bytes(view[start : start + size])).to_bytes(size)
        diffused = b"".join([new(prefix + mixed[first:last]).digest()
                             for prefix, first, last in blocks])
        digest = from_bytes(diffused[:size])  # the last block's digest cut to its length
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
    digest = _chain(noise, size, stripes - 1, hash_name)
    return noise + (digest ^ int.from_bytes(key)).to_bytes(size)  # big-endian, as in _chain


def af_merge(material: bytes, key_size: int, stripes: int, hash_name: str) -> bytes:
    """Recover the key from ``material`` (at least ``key_size * stripes`` bytes)."""
    _check_hash(hash_name)
    if len(material) < key_size * stripes or key_size < 1 or stripes < 1:
        raise FormatError("AF merge: key material shorter than key_size * stripes")
    digest = _chain(material, key_size, stripes - 1, hash_name)
    last = int.from_bytes(material[(stripes - 1) * key_size : stripes * key_size])
    return (digest ^ last).to_bytes(key_size)  # big-endian, as in _chain
