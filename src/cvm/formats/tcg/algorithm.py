"""TPM hash algorithms of event-log banks: identifiers, digest sizes, names.

TCG Algorithm Registry, Family 2.0, Level 00, Revision 01.32, Table 3 (TPM_ALG_ID); the
``algorithmId``/``digestSize`` pairs of the Spec ID event (PFP 1.05 r23, Table 22).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from cvm.errors import FormatError, UsageError


@dataclass(frozen=True)
class HashAlgorithm:
    """One PCR bank's hash: its TPM_ALG_ID, digest size in bytes and names."""

    alg_id: int
    name: str
    digest_size: int
    hashlib_name: str

    def constructor(self) -> Callable[[bytes], hashlib._Hash]:
        """The hashlib constructor of this hash (``hashlib.sha256``, ...)."""
        named = getattr(hashlib, self.hashlib_name, None)
        if callable(named):
            return named  # type: ignore[no-any-return]
        return partial(hashlib.new, self.hashlib_name)

    def digest(self, data: bytes) -> bytes:
        """The digest of ``data`` with this bank's hash."""
        return hashlib.new(self.hashlib_name, data).digest()


TPM_ALG_SHA1 = 0x0004
TPM_ALG_SHA256 = 0x000B
TPM_ALG_SHA384 = 0x000C
TPM_ALG_SHA512 = 0x000D
TPM_ALG_SM3_256 = 0x0012

SHA1 = HashAlgorithm(TPM_ALG_SHA1, "sha1", 20, "sha1")
SHA256 = HashAlgorithm(TPM_ALG_SHA256, "sha256", 32, "sha256")
SHA384 = HashAlgorithm(TPM_ALG_SHA384, "sha384", 48, "sha384")
SHA512 = HashAlgorithm(TPM_ALG_SHA512, "sha512", 64, "sha512")
SM3_256 = HashAlgorithm(TPM_ALG_SM3_256, "sm3_256", 32, "sm3")

ALGORITHMS_BY_ID = {a.alg_id: a for a in (SHA1, SHA256, SHA384, SHA512, SM3_256)}
ALGORITHMS_BY_NAME = {a.name: a for a in ALGORITHMS_BY_ID.values()}


def algorithm_by_id(alg_id: int) -> HashAlgorithm:
    """The algorithm with TPM_ALG_ID ``alg_id``; a FormatError for an id cvm does not know."""
    try:
        return ALGORITHMS_BY_ID[alg_id]
    except KeyError:
        raise FormatError(f"unknown TPM_ALG_ID {alg_id:#06x} in event log") from None


def algorithm_by_name(name: str) -> HashAlgorithm:
    """The algorithm named ``name`` (``sha1``, ``sha256``, ...); a UsageError otherwise."""
    try:
        return ALGORITHMS_BY_NAME[name.lower()]
    except KeyError:
        known = ", ".join(ALGORITHMS_BY_NAME)
        raise UsageError(f"unknown PCR bank {name!r} (known: {known})") from None
