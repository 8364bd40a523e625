"""Strict readers for the JSON value types of the LUKS2 metadata.

LUKS2 On-Disk Format Specification v1.1.4, section 3 ("JSON area"): object keys that name
keyslots, segments, digests and tokens are decimal strings; 64-bit integers (offsets, sizes)
are decimal *strings* because JSON numbers cannot hold them; binary values (salts, digests) are
base64; small integers are JSON numbers. :class:`JsonObject` reads one object, names the path
of every value it rejects, and refuses keys the specification does not define.
"""

from __future__ import annotations

import base64
import binascii
import re

from cvm.errors import FormatError

JsonValue = object
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
UINT64_MAX = (1 << 64) - 1


def parse_id(text: object, where: str) -> int:
    """A decimal-string object key or reference (``"0"``, ``"12"``)."""
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text) or int(text) > 0xFFFFFFFF:
        raise FormatError(f"LUKS2 metadata: {where}: {text!r} is not a decimal id")
    return int(text)


def encode_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class JsonObject:
    """One JSON object being read; :meth:`finish` rejects keys nobody asked for."""

    def __init__(self, value: JsonValue, where: str) -> None:
        if not isinstance(value, dict):
            raise FormatError(f"LUKS2 metadata: {where} is not a JSON object")
        self.value: dict[str, JsonValue] = value
        self.where = where
        self._seen: set[str] = set()

    def _get(self, key: str) -> JsonValue:
        self._seen.add(key)
        if key not in self.value:
            raise FormatError(f"LUKS2 metadata: {self.where}: missing required key {key!r}")
        return self.value[key]

    def has(self, key: str) -> bool:
        self._seen.add(key)
        return key in self.value

    def fail(self, key: str, expected: str) -> FormatError:
        return FormatError(
            f"LUKS2 metadata: {self.where}.{key}: expected {expected}, "
            f"got {self.value.get(key)!r}"
        )

    def string(self, key: str, allowed: tuple[str, ...] | None = None) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self.fail(key, "a string")
        if allowed is not None and value not in allowed:
            raise FormatError(
                f"LUKS2 metadata: {self.where}.{key}: unsupported value {value!r} "
                f"(cvm supports {', '.join(allowed)})"
            )
        return value

    def number(self, key: str, minimum: int = 0, maximum: int = 0x7FFFFFFF) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not (
            minimum <= value <= maximum
        ):
            raise self.fail(key, f"an integer in {minimum}..{maximum}")
        return value

    def uint64(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
            raise self.fail(key, "a decimal string")
        number = int(value)
        if number > UINT64_MAX:
            raise self.fail(key, "a 64-bit value")
        return number

    def base64(self, key: str) -> bytes:
        value = self._get(key)
        if not isinstance(value, str):
            raise self.fail(key, "base64 text")
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise self.fail(key, "base64 text") from None

    def object(self, key: str) -> JsonObject:
        return JsonObject(self._get(key), f"{self.where}.{key}")

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(key, "an array of strings")
        return tuple(str(item) for item in value)

    def ids(self, key: str) -> tuple[int, ...]:
        return tuple(parse_id(item, f"{self.where}.{key}") for item in self.strings(key))

    def finish(self) -> None:
        unknown = sorted(set(self.value) - self._seen)
        if unknown:
            raise FormatError(
                f"LUKS2 metadata: {self.where}: unknown key {unknown[0]!r}"
            )
