"""Strict readers for the JSON documents of the key broker: objects, strings, base64 fields.

Every reader names the field it failed on (``evidence.quote.signature``) and raises
:class:`~cvm.errors.FormatError`; unknown keys are refused, so a misspelt field never passes
silently.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from cvm.errors import FormatError

MAX_DOCUMENT_BYTES = 1 << 20


def load_object(data: bytes | str, where: str) -> dict[str, Any]:
    """Parse ``data`` as one JSON object (at most 1 MiB)."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise FormatError(f"{where}: {len(data)} bytes exceeds the {MAX_DOCUMENT_BYTES}-byte limit")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise FormatError(f"{where}: not JSON ({error})") from None
    return as_object(value, where)


def as_object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def only_keys(value: Mapping[str, Any], where: str, required: set[str],
              optional: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Refuse missing required keys and any key that is neither required nor optional."""
    missing = sorted(required - value.keys())
    if missing:
        raise FormatError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(value.keys() - required - set(optional))
    if unknown:
        raise FormatError(f"{where}: unknown field {', '.join(unknown)}")


def text(value: Mapping[str, Any], key: str, where: str, max_size: int = 4096) -> str:
    found = value.get(key)
    if not isinstance(found, str):
        raise FormatError(f"{where}.{key}: expected a string")
    if len(found) > max_size:
        raise FormatError(f"{where}.{key}: longer than {max_size} characters")
    return found


def integer(value: Mapping[str, Any], key: str, where: str) -> int:
    found = value.get(key)
    if not isinstance(found, int) or isinstance(found, bool):
        raise FormatError(f"{where}.{key}: expected an integer")
    return found


def b64decode(encoded: object, where: str, max_size: int = MAX_DOCUMENT_BYTES) -> bytes:
    """Standard base64 with padding (RFC 4648 section 4), strictly."""
    if not isinstance(encoded, str):
        raise FormatError(f"{where}: expected a base64 string")
    if len(encoded) > (max_size + 2) // 3 * 4:
        raise FormatError(f"{where}: longer than {max_size} bytes")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{where}: not valid base64") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_decode(encoded: object, where: str, max_size: int = 4096) -> bytes:
    """base64url without padding (RFC 7515 section 2), as JOSE writes it."""
    if not isinstance(encoded, str) or len(encoded) > max_size * 2:
        raise FormatError(f"{where}: expected a base64url string")
    if not _B64URL.fullmatch(encoded):
        raise FormatError(f"{where}: not base64url")
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise FormatError(f"{where}: not base64url") from None


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def canonical(value: object) -> bytes:
    """The canonical JSON bytes the binding hashes: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
