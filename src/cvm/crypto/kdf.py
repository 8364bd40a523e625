"""Password-based key derivation for LUKS2 keyslots and digests.

PBKDF2-HMAC (RFC 8018 section 5.2) with SHA-1/SHA-256/SHA-512, and Argon2i / Argon2id
(RFC 9106) as LUKS2 names them (on-disk format v1.1.4, section 3.2.1, table "kdf object"):
``time`` is Argon2's passes ``t``, ``memory`` its ``m`` in KiB, ``cpus`` its lanes ``p``.
Argon2 runs through ``argon2-cffi``'s low-level binding (the reference implementation), since
``cryptography`` offers only Argon2id.

Public API: :func:`pbkdf2`, :func:`argon2`, :func:`calibrate_pbkdf2` and
:func:`calibrate_argon2` (choose costs that take about ``iter_time_ms`` on this machine, as
``cryptsetup --iter-time`` does; cryptsetup 2.6 keeps at least 1000 PBKDF2 iterations and at
least 4 Argon2 passes).
"""

from __future__ import annotations

import time
from typing import Literal

from argon2.exceptions import HashingError
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from cvm.errors import UsageError

Argon2Type = Literal["argon2i", "argon2id"]
PBKDF2_MIN_ITERATIONS = 1000
ARGON2_MIN_TIME = 4
ARGON2_MIN_MEMORY_KIB = 32
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha512": hashes.SHA512,
}


def hash_names() -> tuple[str, ...]:
    """The PBKDF2 hash names cvm accepts."""
    return tuple(_HASHES)


def pbkdf2(hash_name: str, secret: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    """PBKDF2-HMAC-``hash_name`` of ``secret`` (RFC 8018 section 5.2)."""
    try:
        algorithm = _HASHES[hash_name]()
    except KeyError:
        raise UsageError(f"unsupported PBKDF2 hash {hash_name!r}") from None
    if iterations < 1 or length < 1:
        raise UsageError("PBKDF2 needs at least one iteration and one output byte")
    kdf = PBKDF2HMAC(algorithm=algorithm, length=length, salt=salt, iterations=iterations)
    return kdf.derive(secret)


def argon2(
    kind: Argon2Type, secret: bytes, salt: bytes, time_cost: int, memory_kib: int, lanes: int,
    length: int,
) -> bytes:
    """Argon2i or Argon2id (RFC 9106, version 0x13) raw output of ``length`` bytes."""
    if kind not in ("argon2i", "argon2id"):
        raise UsageError(f"unsupported Argon2 type {kind!r}")
    if time_cost < 1 or lanes < 1 or memory_kib < 8 * lanes or length < 4:
        raise UsageError(
            f"Argon2 costs out of range: time {time_cost}, memory {memory_kib} KiB, "
            f"lanes {lanes}, length {length}"
        )
    try:
        return hash_secret_raw(
            secret=secret,
            salt=salt,
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=lanes,
            hash_len=length,
            type=Type.ID if kind == "argon2id" else Type.I,
            version=0x13,
        )
    except HashingError as error:
        raise UsageError(f"Argon2 refused its parameters: {error}") from None


def calibrate_pbkdf2(hash_name: str, iter_time_ms: int, length: int) -> int:
    """PBKDF2 iterations that take about ``iter_time_ms`` here (at least 1000)."""
    if iter_time_ms < 1:
        raise UsageError("--iter-time must be at least 1 ms")
    probe = 20000
    start = time.perf_counter()
    pbkdf2(hash_name, b"calibration", b"\0" * 32, probe, length)
    elapsed = max(time.perf_counter() - start, 1e-6)
    return max(PBKDF2_MIN_ITERATIONS, int(probe * iter_time_ms / 1000 / elapsed))


def calibrate_argon2(
    kind: Argon2Type, iter_time_ms: int, memory_kib: int, lanes: int, length: int
) -> int:
    """Argon2 passes that take about ``iter_time_ms`` at ``memory_kib`` (at least 4)."""
    if iter_time_ms < 1:
        raise UsageError("--iter-time must be at least 1 ms")
    start = time.perf_counter()
    argon2(kind, b"calibration", b"\0" * 32, ARGON2_MIN_TIME, memory_kib, lanes, length)
    per_pass = max((time.perf_counter() - start) / ARGON2_MIN_TIME, 1e-6)
    return max(ARGON2_MIN_TIME, int(iter_time_ms / 1000 / per_pass))
