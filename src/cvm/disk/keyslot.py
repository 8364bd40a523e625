"""LUKS2 keyslots: from a passphrase to the volume key and back.

LUKS2 On-Disk Format Specification v1.1.4, sections 3.2 (keyslots) and 3.4 (digests), with
the LUKS1 specification v1.2.3 section 2.4 for the AF splitter:

1. ``K = KDF(passphrase, kdf.salt)`` of ``area.key_size`` bytes (PBKDF2, Argon2i/Argon2id);
2. the keyslot area (``af_size`` bytes at ``area.offset``) is AES-XTS ``aes-xts-plain64`` with
   ``K`` in 512-byte sectors numbered from 0 at the area start;
3. AF-merge gives the candidate volume key, which is right iff its PBKDF2 digest
   (``digest.hash``, ``digest.salt``, ``digest.iterations``) equals ``digest.digest``.

Public API: :class:`KdfSpec` (what the user asked for: type, cost or target time),
:func:`derive_kdf` (a concrete :class:`~cvm.formats.luks2.metadata.Kdf` with a fresh salt),
:func:`seal_keyslot` (new keyslot + encrypted area bytes), :func:`open_keyslot` and
:func:`volume_key_digest`. When no keyslot opens with the given passphrase the volume raises
:class:`~cvm.errors.WrongKeyError` (exit code 2, as cryptsetup).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cvm.crypto import kdf as kdfs
from cvm.crypto.xts import XtsCipher
from cvm.disk.kdf_ceiling import ARGON2_MAX_MEMORY_KIB
from cvm.disk.storage import Storage
from cvm.errors import FormatError, UsageError
from cvm.formats.luks2.anti_forensic import af_merge, af_size, af_split
from cvm.formats.luks2.metadata import Argon2Kdf, Digest, Kdf, Keyslot, Pbkdf2Kdf

KdfType = Literal["pbkdf2", "argon2id", "argon2i"]
SALT_SIZE = 32
AREA_ALIGNMENT = 4096
AF_STRIPES = 4000
MAX_KDF_NUMBER = 0x7FFFFFFF
ARGON2_MIN_MEMORY_KIB = 32
Random = Callable[[int], bytes]


@dataclass(frozen=True)
class KdfSpec:
    """The KDF a new keyslot should use: fixed costs, or ``iter_time_ms`` to calibrate."""

    type: KdfType = "argon2id"
    iterations: int | None = None
    iter_time_ms: int = 2000
    memory_kib: int = 262144
    parallel: int = 4
    hash: str = "sha256"

    def __post_init__(self) -> None:
        if self.type not in ("pbkdf2", "argon2id", "argon2i"):
            raise UsageError(f"unknown PBKDF {self.type!r} (pbkdf2, argon2id, argon2i)")
        if self.iterations is not None and not 1 <= self.iterations <= MAX_KDF_NUMBER:
            raise UsageError(f"--pbkdf-force-iterations must be in 1..{MAX_KDF_NUMBER}, "
                             f"not {self.iterations}")
        if not 1 <= self.iter_time_ms <= MAX_KDF_NUMBER:
            raise UsageError(f"--iter-time must be in 1..{MAX_KDF_NUMBER} ms, "
                             f"not {self.iter_time_ms}")
        if not 1 <= self.parallel <= 16:
            raise UsageError(f"--pbkdf-parallel must be in 1..16, not {self.parallel}")
        if not ARGON2_MIN_MEMORY_KIB <= self.memory_kib <= ARGON2_MAX_MEMORY_KIB:
            raise UsageError(f"--pbkdf-memory must be in {ARGON2_MIN_MEMORY_KIB}.."
                             f"{ARGON2_MAX_MEMORY_KIB} KiB (cryptsetup's limits), not "
                             f"{self.memory_kib}")


def derive_kdf(spec: KdfSpec, key_size: int, random: Random) -> Kdf:
    """A keyslot ``kdf`` object for ``spec`` with a fresh 32-byte salt."""
    salt = random(SALT_SIZE)
    if spec.type == "pbkdf2":
        iterations = spec.iterations or kdfs.calibrate_pbkdf2(spec.hash, spec.iter_time_ms,
                                                               key_size)
        return Pbkdf2Kdf(spec.hash, min(iterations, MAX_KDF_NUMBER), salt)
    time_cost = spec.iterations or kdfs.calibrate_argon2(
        spec.type, spec.iter_time_ms, spec.memory_kib, spec.parallel, key_size)
    return Argon2Kdf(spec.type, min(time_cost, MAX_KDF_NUMBER), spec.memory_kib, spec.parallel,
                     salt)


def _derive(kdf: Kdf, secret: bytes, length: int) -> bytes:
    if isinstance(kdf, Pbkdf2Kdf):
        return kdfs.pbkdf2(kdf.hash, secret, kdf.salt, kdf.iterations, length)
    kind: Literal["argon2i", "argon2id"] = "argon2i" if kdf.type == "argon2i" else "argon2id"
    return kdfs.argon2(kind, secret, kdf.salt, kdf.time, kdf.memory, kdf.cpus, length)


def volume_key_digest(digest_hash: str, volume_key: bytes, salt: bytes, iterations: int) -> bytes:
    """The digest object's value: PBKDF2(hash, volume key, salt, iterations), 32 bytes."""
    return kdfs.pbkdf2(digest_hash, volume_key, salt, iterations, 32)


def digest_matches(digest: Digest, volume_key: bytes) -> bool:
    candidate = kdfs.pbkdf2(digest.hash, volume_key, digest.salt, digest.iterations,
                            len(digest.digest))
    return hmac.compare_digest(candidate, digest.digest)


def seal_keyslot(volume_key: bytes, secret: bytes, kdf: Kdf, area_offset: int, area_size: int,
                 random: Random, af_hash: str = "sha256") -> tuple[Keyslot, bytes]:
    """A new keyslot for ``volume_key`` under ``secret`` and its encrypted area bytes, its key
    AF-split with ``af_hash`` (cryptsetup splits with the keyslot's hash option: the PBKDF2
    hash, SHA-256 unless given)."""
    key_size = len(volume_key)
    needed = af_size(key_size, AF_STRIPES)
    if needed > area_size:
        raise UsageError(f"keyslot area of {area_size} bytes is smaller than {needed}")
    area_key = _derive(kdf, secret, key_size)
    material = af_split(volume_key, AF_STRIPES, af_hash, random)
    material += bytes(needed - len(material))
    encrypted = bytes(XtsCipher(area_key).encrypt_sectors(material, 0, 512))
    slot = Keyslot(key_size=key_size, area_offset=area_offset, area_size=area_size, kdf=kdf,
                   area_key_size=key_size, af_hash=af_hash)
    return slot, encrypted


def open_keyslot(storage: Storage, slot: Keyslot, secret: bytes) -> bytes:
    """The candidate volume key this keyslot yields for ``secret`` (check it with a digest)."""
    size = af_size(slot.key_size, slot.af_stripes)
    if size > slot.area_size:
        raise FormatError(f"LUKS2 metadata: keyslot area of {slot.area_size} bytes is smaller "
                          f"than its {size}-byte AF-split key")
    area_key = _derive(slot.kdf, secret, slot.area_key_size)
    encrypted = storage.read(slot.area_offset, size)
    material = bytes(XtsCipher(area_key).decrypt_sectors(encrypted, 0, 512))
    return af_merge(material, slot.key_size, slot.af_stripes, slot.af_hash)


def allocate_area(taken: list[tuple[int, int]], start: int, end: int, size: int) -> int:
    """The lowest 4 KiB-aligned offset in ``[start, end)`` where ``size`` bytes are free."""
    offset = start
    for area_start, area_size in sorted(taken):
        if offset + size <= area_start:
            break
        offset = max(offset, -(-(area_start + area_size) // AREA_ALIGNMENT) * AREA_ALIGNMENT)
    if offset + size > end:
        raise UsageError("no free space left in the LUKS2 keyslots area")
    return offset
