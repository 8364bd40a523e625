"""The LUKS2 JSON metadata: keyslots, tokens, segments, digests and config.

LUKS2 On-Disk Format Specification v1.1.4, section 3 ("JSON area"), tables 3.1 (keyslot,
``af`` and ``area`` objects), 3.2.1 (``kdf`` object: ``pbkdf2``, ``argon2i``, ``argon2id``),
3.3 (segment ``crypt``), 3.4 (digest ``pbkdf2``), 3.5 (token) and 3.6 (config). Object members
are written in the order cryptsetup 2.6 writes them, compactly (json-c
``JSON_C_TO_STRING_PLAIN``), so ``Metadata.parse(area).to_area(...)`` reproduces a
cryptsetup-written JSON area byte for byte.

Public API: :class:`Metadata` (``parse(json_area)``, ``from_json(obj)``, ``to_json()``,
``to_text()``, ``to_area(json_size)``) made of :class:`Keyslot` (with :class:`Pbkdf2Kdf` or
:class:`Argon2Kdf`), :class:`Segment`, :class:`Digest`, :class:`Config`; tokens stay
arbitrary JSON objects (``dict``) whose ``type`` does not start with ``luks2-``.
Unknown members, unsupported mandatory requirements and objects that do not fit together
(cryptsetup's rules, :mod:`cvm.formats.luks2.consistency`) raise :class:`~cvm.errors.FormatError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cvm.errors import FormatError, UsageError
from cvm.formats.luks2.consistency import check_consistency
from cvm.formats.luks2.json_fields import JsonObject, encode_b64, parse_id

ENCRYPTIONS = ("aes-xts-plain64",)
AF_HASHES = ("sha1", "sha256", "sha512")
ARGON2_TYPES = ("argon2i", "argon2id")
SECTOR_SIZES = (512, 1024, 2048, 4096)
ARGON2_MIN_SALT_SIZE = 8


@dataclass(frozen=True)
class Pbkdf2Kdf:
    """``kdf`` of type ``pbkdf2`` (spec table 3.2.1)."""

    hash: str
    iterations: int
    salt: bytes

    def to_json(self) -> dict[str, Any]:
        return {"type": "pbkdf2", "hash": self.hash, "iterations": self.iterations,
                "salt": encode_b64(self.salt)}


@dataclass(frozen=True)
class Argon2Kdf:
    """``kdf`` of type ``argon2i``/``argon2id``: ``time`` passes, ``memory`` KiB, ``cpus``."""

    type: str
    time: int
    memory: int
    cpus: int
    salt: bytes

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "time": self.time, "memory": self.memory, "cpus": self.cpus,
                "salt": encode_b64(self.salt)}


Kdf = Pbkdf2Kdf | Argon2Kdf


def _kdf(obj: JsonObject) -> Kdf:
    kind = obj.string("type", ("pbkdf2", *ARGON2_TYPES))
    if kind == "pbkdf2":
        kdf: Kdf = Pbkdf2Kdf(obj.string("hash", AF_HASHES), obj.number("iterations", 1),
                             obj.base64("salt"))
    else:
        kdf = Argon2Kdf(kind, obj.number("time", 1), obj.number("memory", 8),
                        obj.number("cpus", 1, 16777215), obj.base64("salt"))
        if kdf.memory < 8 * kdf.cpus:
            raise obj.fail("memory", f"at least 8 KiB per thread ({8 * kdf.cpus})")
        if len(kdf.salt) < ARGON2_MIN_SALT_SIZE:
            raise obj.fail("salt", f"at least {ARGON2_MIN_SALT_SIZE} bytes for Argon2")
    obj.finish()
    return kdf


@dataclass(frozen=True)
class Keyslot:
    """A ``luks2`` keyslot: the AF-split volume key in an encrypted ``raw`` area."""

    key_size: int
    area_offset: int
    area_size: int
    kdf: Kdf
    area_encryption: str = "aes-xts-plain64"
    area_key_size: int = 64
    af_stripes: int = 4000
    af_hash: str = "sha256"
    priority: int | None = None

    @classmethod
    def from_json(cls, value: object, where: str) -> Keyslot:
        obj = JsonObject(value, where)
        obj.string("type", ("luks2",))
        af = obj.object("af")
        af.string("type", ("luks1",))
        stripes, af_hash = af.number("stripes", 1), af.string("hash", AF_HASHES)
        af.finish()
        area = obj.object("area")
        area.string("type", ("raw",))
        offset, size = area.uint64("offset"), area.uint64("size")
        encryption = area.string("encryption", ENCRYPTIONS)
        area_key_size = area.number("key_size", 1, 1024)
        area.finish()
        priority = obj.number("priority", 0, 2) if obj.has("priority") else None
        slot = cls(obj.number("key_size", 1, 1024), offset, size, _kdf(obj.object("kdf")),
                   encryption, area_key_size, stripes, af_hash, priority)
        obj.finish()
        if slot.area_key_size not in (32, 64):
            raise FormatError(f"LUKS2 metadata: {where}: area key_size must be 32 or 64")
        return slot

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "luks2",
            "key_size": self.key_size,
            "af": {"type": "luks1", "stripes": self.af_stripes, "hash": self.af_hash},
            "area": {"type": "raw", "offset": str(self.area_offset), "size": str(self.area_size),
                     "encryption": self.area_encryption, "key_size": self.area_key_size},
            "kdf": self.kdf.to_json(),
        }
        if self.priority is not None:
            out["priority"] = self.priority
        return out


@dataclass(frozen=True)
class Segment:
    """A ``crypt`` data segment; ``size`` None means ``"dynamic"`` (to the device end)."""

    offset: int
    size: int | None
    encryption: str = "aes-xts-plain64"
    sector_size: int = 4096
    iv_tweak: int = 0
    flags: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, value: object, where: str) -> Segment:
        obj = JsonObject(value, where)
        obj.string("type", ("crypt",))
        offset = obj.uint64("offset")
        size = None if obj.has("size") and obj.value["size"] == "dynamic" else obj.uint64("size")
        if size == 0:
            raise obj.fail("size", '"dynamic" or a non-zero size')
        iv_tweak = obj.uint64("iv_tweak")
        encryption = obj.string("encryption", ENCRYPTIONS)
        sector_size = obj.number("sector_size", 512, 4096)
        if sector_size not in SECTOR_SIZES:
            raise obj.fail("sector_size", "512, 1024, 2048 or 4096")
        flags = obj.strings("flags") if obj.has("flags") else None
        obj.finish()
        if offset % sector_size or (size is not None and size % sector_size):
            raise FormatError(f"LUKS2 metadata: {where}: not aligned to its sector size")
        return cls(offset, size, encryption, sector_size, iv_tweak, flags)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "crypt", "offset": str(self.offset),
            "size": "dynamic" if self.size is None else str(self.size),
            "iv_tweak": str(self.iv_tweak), "encryption": self.encryption,
            "sector_size": self.sector_size,
        }
        if self.flags is not None:
            out["flags"] = list(self.flags)
        return out


@dataclass(frozen=True)
class Digest:
    """A ``pbkdf2`` digest of the volume key, bound to keyslots and segments."""

    keyslots: tuple[int, ...]
    segments: tuple[int, ...]
    hash: str
    iterations: int
    salt: bytes
    digest: bytes

    @classmethod
    def from_json(cls, value: object, where: str) -> Digest:
        obj = JsonObject(value, where)
        obj.string("type", ("pbkdf2",))
        digest = cls(obj.ids("keyslots"), obj.ids("segments"), obj.string("hash", AF_HASHES),
                     obj.number("iterations", 1), obj.base64("salt"), obj.base64("digest"))
        if not digest.digest:
            raise obj.fail("digest", "a non-empty digest")
        obj.finish()
        return digest

    def to_json(self) -> dict[str, Any]:
        return {"type": "pbkdf2", "keyslots": [str(k) for k in self.keyslots],
                "segments": [str(s) for s in self.segments], "hash": self.hash,
                "iterations": self.iterations, "salt": encode_b64(self.salt),
                "digest": encode_b64(self.digest)}


@dataclass(frozen=True)
class Config:
    """``config``: JSON area size, keyslots area size, persistent flags, requirements."""

    json_size: int
    keyslots_size: int
    flags: tuple[str, ...] | None = None
    requirements: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, value: object) -> Config:
        obj = JsonObject(value, "config")
        json_size, keyslots_size = obj.uint64("json_size"), obj.uint64("keyslots_size")
        flags = obj.strings("flags") if obj.has("flags") else None
        requirements = None
        if obj.has("requirements"):
            req = obj.object("requirements")
            requirements = req.strings("mandatory") if req.has("mandatory") else ()
            req.finish()
            if requirements:
                raise FormatError(
                    f"LUKS2 metadata: config.requirements: unsupported mandatory requirement "
                    f"{requirements[0]!r}; cvm refuses to open this volume"
                )
        obj.finish()
        return cls(json_size, keyslots_size, flags, requirements)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"json_size": str(self.json_size),
                               "keyslots_size": str(self.keyslots_size)}
        if self.flags is not None:
            out["flags"] = list(self.flags)
        if self.requirements is not None:
            out["requirements"] = {"mandatory": list(self.requirements)}
        return out


def validate_token(value: object, where: str) -> dict[str, Any]:
    """A token: a JSON object with a ``type`` string and a ``keyslots`` array of ids."""
    obj = JsonObject(value, where)
    kind = obj.string("type")
    obj.ids("keyslots")
    if kind.startswith("luks2-"):
        raise FormatError(f"LUKS2 metadata: {where}: token type {kind!r} is reserved (luks2-*)")
    return dict(obj.value)


def _table(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"LUKS2 metadata: {name} is not a JSON object")
    for key in value:
        parse_id(key, name)
    return value


@dataclass(frozen=True)
class Metadata:
    """The whole JSON area (spec section 3); dict order is the on-disk member order."""

    keyslots: dict[int, Keyslot]
    segments: dict[int, Segment]
    digests: dict[int, Digest]
    config: Config
    tokens: dict[int, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: object) -> Metadata:
        top = JsonObject(value, "top level")
        for key in ("keyslots", "tokens", "segments", "digests", "config"):
            top.has(key)
            if key not in top.value:
                raise FormatError(f"LUKS2 metadata: top level: missing required key {key!r}")
        keyslots = {int(k): Keyslot.from_json(v, f"keyslots.{k}")
                    for k, v in _table(top.value["keyslots"], "keyslots").items()}
        tokens = {int(k): validate_token(v, f"tokens.{k}")
                  for k, v in _table(top.value["tokens"], "tokens").items()}
        segments = {int(k): Segment.from_json(v, f"segments.{k}")
                    for k, v in _table(top.value["segments"], "segments").items()}
        digests = {int(k): Digest.from_json(v, f"digests.{k}")
                   for k, v in _table(top.value["digests"], "digests").items()}
        top.finish()
        meta = cls(keyslots, segments, digests, Config.from_json(top.value["config"]), tokens)
        meta.check_consistency()
        return meta

    def check_consistency(self) -> None:
        """cryptsetup's header validation rules (:mod:`cvm.formats.luks2.consistency`)."""
        check_consistency(self.keyslots, self.segments, self.digests, self.config, self.tokens)

    @classmethod
    def parse(cls, json_area: bytes) -> Metadata:
        """Parse a JSON area: NUL-terminated UTF-8 JSON, zero-padded (spec section 3)."""
        end = json_area.find(b"\0")
        if end < 0:
            raise FormatError("LUKS2 metadata: JSON area is not NUL-terminated")
        if json_area[end:].strip(b"\0"):  # a scan in C: the padding is most of the area
            raise FormatError("LUKS2 metadata: JSON area has bytes after its terminator")
        try:
            value = json.loads(json_area[:end].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise FormatError(f"LUKS2 metadata: JSON area is not valid JSON ({error})") from None
        return cls.from_json(value)

    def digest_of_keyslot(self, slot: int) -> tuple[int, Digest]:
        for number, digest in self.digests.items():
            if slot in digest.keyslots:
                return number, digest
        raise FormatError(f"LUKS2 metadata: keyslot {slot} has no digest")

    def to_json(self) -> dict[str, Any]:
        return {
            "keyslots": {str(k): v.to_json() for k, v in self.keyslots.items()},
            "tokens": {str(k): v for k, v in self.tokens.items()},
            "segments": {str(k): v.to_json() for k, v in self.segments.items()},
            "digests": {str(k): v.to_json() for k, v in self.digests.items()},
            "config": self.config.to_json(),
        }

    def to_text(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)

    def to_area(self) -> bytes:
        """The JSON area of ``config.json_size`` bytes: JSON text, NUL, zero padding."""
        text = self.to_text().encode("utf-8")
        if len(text) >= self.config.json_size:
            raise UsageError(
                f"LUKS2 metadata of {len(text)} bytes does not fit the "
                f"{self.config.json_size}-byte JSON area"
            )
        return text.ljust(self.config.json_size, b"\0")
