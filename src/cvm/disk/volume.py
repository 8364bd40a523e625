"""LUKS2 volumes: format, unlock, keyslots, tokens and the encrypted data segment.

LUKS2 On-Disk Format Specification v1.1.4 (sections 2-3), written so that cryptsetup 2.6
reads what cvm writes and the reverse. Layout of a new volume (cryptsetup's defaults, spec
section 2.2 and ``luksFormat``): two 16 KiB header copies, keyslot areas from 32 KiB, the data
segment at 16 MiB (``keyslots_size = data_offset - 2 * hdr_size``).

Public API (:class:`Luks2Volume`)
=================================
``Luks2Volume.format(storage, passphrase, kdf=KdfSpec(...), volume_key=None, sector_size=4096,
label="", ...)`` -> volume (keyslot 0)  ·  ``Luks2Volume.open(storage, repair=True)``
``unlock(passphrase) -> bytes`` (the volume key; :class:`WrongKeyError` otherwise)  ·
``unlock_slot(passphrase) -> (slot, key)``  ·  ``check_volume_key(key)``
``add_keyslot(volume_key, passphrase, kdf) -> int``  ·  ``add_keyslot_for_secret(secret,
volume_key, iterations=1000) -> int`` (a PBKDF2 keyslot for a high-entropy secret, e.g. one a
TPM unseals)  ·  ``remove_keyslot(slot)``  ·  ``change_key(old, new, kdf) -> int``
``tokens`` (dict id -> JSON object)  ·  ``add_token(obj, token_id=None) -> int``  ·
``remove_token(token_id)``  ·  ``header``, ``metadata``, ``warnings``
``data_device(volume_key) -> CryptDevice`` (the dm-crypt layer over segment 0).

Every metadata change goes through :func:`~cvm.disk.header_store.store_header` (seqid + 1,
primary then secondary); a new keyslot's area is written before the header names it, and a
removed keyslot's area is wiped only after the header no longer names it, so an interruption
at any write leaves the old or the new key set usable.
"""

from __future__ import annotations

import os
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cvm.disk.dm_crypt import CryptDevice
from cvm.disk.header_store import load_header, store_header
from cvm.disk.kdf_ceiling import KdfCeiling, describe_kdf
from cvm.disk.keyslot import (
    AF_STRIPES,
    KdfSpec,
    Random,
    allocate_area,
    derive_kdf,
    digest_matches,
    open_keyslot,
    seal_keyslot,
    volume_key_digest,
)
from cvm.disk.storage import Storage
from cvm.errors import PolicyError, StateError, UsageError, WrongKeyError
from cvm.formats.luks2.anti_forensic import af_size
from cvm.formats.luks2.binary_header import BINARY_HEADER_SIZE, BinaryHeader
from cvm.formats.luks2.header_copy import HeaderCopy
from cvm.formats.luks2.metadata import (
    Config,
    Digest,
    Metadata,
    Segment,
    validate_token,
)

DEFAULT_HDR_SIZE = 0x4000
DEFAULT_DATA_OFFSET = 16 << 20
MAX_KEYSLOTS = 32
MAX_TOKENS = 32
DIGEST_ITERATIONS = 1000
DEFAULT_CEILING = KdfCeiling()
Announce = Callable[[str], None]


def quiet(_: str) -> None:
    return None


def data_segment(metadata: Metadata) -> Segment:
    """The volume's data segment 0, or a StateError (a plain function, so that mutation testing
    reaches the refusal :attr:`Luks2Volume.segment` makes)."""
    if 0 not in metadata.segments:
        raise StateError("this LUKS2 volume has no data segment 0")
    return metadata.segments[0]


class Luks2Volume:
    """An opened LUKS2 header on ``storage``; see the module docstring."""

    def __init__(self, storage: Storage, header: HeaderCopy, warnings: tuple[str, ...] = (),
                 random: Random = os.urandom, ceiling: KdfCeiling = DEFAULT_CEILING,
                 announce: Announce = quiet) -> None:
        self.storage = storage
        self.header = header
        self.warnings = warnings
        self.ceiling = ceiling
        self.announce = announce
        self._random = random

    # -- opening and formatting -------------------------------------------------------------

    @classmethod
    def open(cls, storage: Storage, repair: bool = False, random: Random = os.urandom,
             ceiling: KdfCeiling = DEFAULT_CEILING, announce: Announce = quiet
             ) -> Luks2Volume:
        """Load the newest valid header copy; with ``repair``, rewrite both if one was bad.

        ``ceiling`` bounds the KDF work spent per keyslot try; ``announce`` hears, before each
        derivation, what the header asks for (the CLI prints it on stderr)."""
        loaded = load_header(storage)
        volume = cls(storage, loaded.header, loaded.warnings, random, ceiling, announce)
        if loaded.needs_repair and repair:
            volume._commit(loaded.header.metadata)
        return volume

    @classmethod
    def format(
        cls, storage: Storage, passphrase: bytes, kdf: KdfSpec | None = None,
        volume_key: bytes | None = None, sector_size: int = 4096, label: str = "",
        subsystem: str = "", volume_uuid: str | None = None,
        data_offset: int = DEFAULT_DATA_OFFSET, data_size: int | None = None,
        hdr_size: int = DEFAULT_HDR_SIZE, keyslots_size: int | None = None,
        random: Random = os.urandom, announce: Announce = quiet,
    ) -> Luks2Volume:
        """Write a new volume with keyslot 0 for ``passphrase`` (spec section 2-3).

        ``data_offset=0`` makes a detached header (the data lives on another storage, see
        :meth:`data_device`); its keyslots area then defaults to 16 MiB minus both copies.
        """
        key = volume_key if volume_key is not None else random(64)
        if len(key) not in (32, 64):
            raise UsageError(f"volume key must be 32 or 64 bytes, got {len(key)}")
        if sector_size not in (512, 1024, 2048, 4096) or data_offset % 4096:
            raise UsageError("sector size must be 512..4096 and the data offset 4 KiB-aligned")
        if keyslots_size is None:
            keyslots_size = (data_offset or DEFAULT_DATA_OFFSET) - 2 * hdr_size
        if data_offset and data_offset < 2 * hdr_size + keyslots_size:
            raise UsageError(f"data offset {data_offset} overlaps the keyslots area")
        if keyslots_size % 4096 or keyslots_size < af_size(len(key), AF_STRIPES):
            raise UsageError(f"data offset {data_offset} leaves no room for a keyslot")
        if data_size is not None and data_size % sector_size:
            raise UsageError(f"data size {data_size} is not a multiple of {sector_size}")
        salt = random(32)
        digest = Digest((), (0,), "sha256", DIGEST_ITERATIONS, salt,
                        volume_key_digest("sha256", key, salt, DIGEST_ITERATIONS))
        metadata = Metadata(
            keyslots={},
            segments={0: Segment(data_offset, data_size, sector_size=sector_size)},
            digests={0: digest},
            config=Config(hdr_size - BINARY_HEADER_SIZE, keyslots_size),
        )
        binary = BinaryHeader(
            secondary=False, hdr_size=hdr_size, seqid=1, label=label, csum_alg="sha256",
            salt=bytes(64), uuid=volume_uuid or str(uuid_module.UUID(bytes=random(16),
                                                                     version=4)),
            subsystem=subsystem, hdr_offset=0, csum=bytes(64),
        )
        volume = cls(storage, HeaderCopy(binary, metadata), (), random, announce=announce)
        volume._commit(metadata)
        volume.add_keyslot(key, passphrase, kdf or KdfSpec())
        return volume

    # -- reading -----------------------------------------------------------------------------

    @property
    def metadata(self) -> Metadata:
        return self.header.metadata

    @property
    def uuid(self) -> str:
        return self.header.binary.uuid

    @property
    def label(self) -> str:
        return self.header.binary.label

    @property
    def segment(self) -> Segment:
        return data_segment(self.metadata)

    @property
    def tokens(self) -> dict[int, dict[str, Any]]:
        return dict(self.metadata.tokens)

    def check_volume_key(self, volume_key: bytes) -> None:
        """Raise :class:`WrongKeyError` unless ``volume_key`` matches a segment digest."""
        for number, digest in self.metadata.digests.items():
            refusal = self.ceiling.refusal(None, digest.iterations)
            if digest.segments and refusal:
                raise PolicyError(f"digest {number} asks for {refusal}")
        if not any(digest_matches(d, volume_key) for d in self.metadata.digests.values()
                   if d.segments):
            raise WrongKeyError("volume key does not match the volume's digest")

    def unlock_slot(self, passphrase: bytes) -> tuple[int, bytes]:
        """The first keyslot (priority 2 first, 0 skipped) that opens; its volume key.

        A keyslot whose KDF and digest cost more than :attr:`ceiling` is not tried; if no
        other keyslot opens, :class:`PolicyError` names it (else :class:`WrongKeyError`)."""
        order = sorted(((n, s) for n, s in self.metadata.keyslots.items() if s.priority != 0),
                       key=lambda item: -(1 if item[1].priority is None else item[1].priority))
        refused: list[str] = []
        for number, slot in order:
            _, digest = self.metadata.digest_of_keyslot(number)  # exactly one: consistency
            refusal = self.ceiling.refusal(slot.kdf, digest.iterations)
            if refusal:
                refused.append(f"keyslot {number} asks for {refusal}")
                self.announce(f"keyslot {number}: not tried: {describe_kdf(slot.kdf)} is "
                              f"{refusal}")
                continue
            self.announce(f"keyslot {number}: deriving its key ({describe_kdf(slot.kdf)})")
            candidate = open_keyslot(self.storage, slot, passphrase)
            if digest_matches(digest, candidate):
                return number, candidate
        if refused:
            raise PolicyError(f"{'; '.join(refused)}; no other keyslot opens with this key")
        raise WrongKeyError("No key available with this passphrase.")

    def unlock(self, passphrase: bytes) -> bytes:
        return self.unlock_slot(passphrase)[1]

    def data_device(self, volume_key: bytes, threads: int = 1, data: Storage | None = None
                    ) -> CryptDevice:
        """The plaintext block device of segment 0 (checks the key first); ``data`` is the
        data storage of a detached header (default: the header's own storage)."""
        self.check_volume_key(volume_key)
        return CryptDevice(data or self.storage, self.segment, volume_key, threads=threads)

    # -- changing ----------------------------------------------------------------------------

    def _commit(self, metadata: Metadata) -> None:
        metadata.check_consistency()
        proposed = replace(self.header, metadata=metadata)
        self.header = store_header(self.storage, proposed, (self._random(64), self._random(64)))

    def add_keyslot(self, volume_key: bytes, passphrase: bytes, kdf: KdfSpec | None = None,
                    slot: int | None = None) -> int:
        """A new keyslot for ``passphrase``; area written and flushed before the header."""
        self.check_volume_key(volume_key)
        meta = self.metadata
        number = slot if slot is not None else next(
            i for i in range(MAX_KEYSLOTS + 1) if i not in meta.keyslots)
        if number >= MAX_KEYSLOTS or number in meta.keyslots:
            raise UsageError(f"keyslot {number} is in use or out of range (0..31)")
        area_size = -(-af_size(len(volume_key), AF_STRIPES) // 4096) * 4096
        start = 2 * self.header.binary.hdr_size
        taken = [(s.area_offset, s.area_size) for s in meta.keyslots.values()]
        offset = allocate_area(taken, start, start + meta.config.keyslots_size, area_size)
        spec = kdf or KdfSpec()
        if spec.iterations is None:
            self.announce(f"keyslot {number}: calibrating {spec.type} for "
                          f"{spec.iter_time_ms} ms")
        new_kdf = derive_kdf(spec, len(volume_key), self._random)
        self.announce(f"keyslot {number}: deriving its key ({describe_kdf(new_kdf)})")
        keyslot, area = seal_keyslot(volume_key, passphrase, new_kdf, offset, area_size,
                                     self._random, af_hash=spec.hash)
        self.storage.write(offset, area)
        self.storage.flush()
        digest_id = next((n for n, d in meta.digests.items() if 0 in d.segments), None)
        if digest_id is None:
            raise StateError("this LUKS2 volume has no digest for segment 0")
        digest = meta.digests[digest_id]
        digests = dict(meta.digests)
        digests[digest_id] = replace(digest, keyslots=(*digest.keyslots, number))
        self._commit(replace(meta, keyslots={**meta.keyslots, number: keyslot},
                             digests=digests))
        return number

    def add_keyslot_for_secret(self, secret: bytes, volume_key: bytes,
                               iterations: int = DIGEST_ITERATIONS) -> int:
        """A PBKDF2-SHA256 keyslot for a high-entropy ``secret`` (for tokens such as TPM2)."""
        return self.add_keyslot(volume_key, secret, KdfSpec("pbkdf2", iterations=iterations))

    def remove_keyslot(self, number: int) -> None:
        """Drop keyslot ``number`` from the header, then wipe its area (cryptsetup order)."""
        meta = self.metadata
        if number not in meta.keyslots:
            raise UsageError(f"keyslot {number} is not in use")
        slot = meta.keyslots[number]
        digests = {n: replace(d, keyslots=tuple(k for k in d.keyslots if k != number))
                   for n, d in meta.digests.items()}
        tokens = {}
        for token_id, token in meta.tokens.items():
            refs = [k for k in token["keyslots"] if int(k) != number]
            tokens[token_id] = {**token, "keyslots": refs}
        self._commit(replace(meta, keyslots={n: s for n, s in meta.keyslots.items()
                                             if n != number}, digests=digests, tokens=tokens))
        self.storage.write(slot.area_offset, self._random(slot.area_size))
        self.storage.flush()

    def remove_key(self, passphrase: bytes) -> int:
        """Remove the keyslot that ``passphrase`` opens; returns its number."""
        number, _ = self.unlock_slot(passphrase)
        self.remove_keyslot(number)
        return number

    def change_key(self, old: bytes, new: bytes, kdf: KdfSpec | None = None) -> int:
        """Add a keyslot for ``new`` (same volume key), then remove the one ``old`` opened."""
        number, key = self.unlock_slot(old)
        added = self.add_keyslot(key, new, kdf)
        self.remove_keyslot(number)
        return added

    def add_token(self, token: dict[str, Any], token_id: int | None = None) -> int:
        """Store an arbitrary JSON token (``type`` not ``luks2-*``; ``keyslots`` ids)."""
        validate_token(token, "token")
        meta = self.metadata
        number = token_id if token_id is not None else next(
            i for i in range(MAX_TOKENS + 1) if i not in meta.tokens)
        if not 0 <= number < MAX_TOKENS or number in meta.tokens:
            raise UsageError(f"token {number} is in use or out of range (0..31)")
        self._commit(replace(meta, tokens={**meta.tokens, number: dict(token)}))
        return number

    def remove_token(self, token_id: int) -> None:
        meta = self.metadata
        if token_id not in meta.tokens:
            raise UsageError(f"token {token_id} is not in use")
        self._commit(replace(meta, tokens={n: t for n, t in meta.tokens.items()
                                           if n != token_id}))
