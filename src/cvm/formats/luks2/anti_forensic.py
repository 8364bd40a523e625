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


def _diffuse(buffer: bytes, hash_name: str) -> bytes:
    digest_size = hashlib.new(hash_name).digest_size
    out = bytearray()
    for index, start in enumerate(range(0, len(buffer), digest_size)):
        block = buffer[start : start + digest_size]
        out += hashlib.new(hash_name, index.to_bytes(4, "big") + block).digest()[: len(block)]
    return bytes(out)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


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
    digest = bytes(size)
    for k in range(stripes - 1):
        digest = _diffuse(_xor(digest, noise[k * size : (k + 1) * size]), hash_name)
    return noise + _xor(digest, key)


def af_merge(material: bytes, key_size: int, stripes: int, hash_name: str) -> bytes:
    """Recover the key from ``material`` (at least ``key_size * stripes`` bytes)."""
    _check_hash(hash_name)
    if len(material) < key_size * stripes or key_size < 1 or stripes < 1:
        raise FormatError("AF merge: key material shorter than key_size * stripes")
    digest = bytes(key_size)
    for k in range(stripes - 1):
        digest = _diffuse(_xor(digest, material[k * key_size : (k + 1) * key_size]), hash_name)
    last = material[(stripes - 1) * key_size : stripes * key_size]
    return _xor(digest, last)
