"""Where a run spends its time on cryptography: a timing wrapper around every primitive, installed
by a benchmark only (``with CryptoTimer() as timer: ...``).

Wrapped, where they are called: every public function and method of ``cvm.crypto`` (the only
door to ``cryptography``), rebound in every ``cvm`` module that imported it by name; and the
standard library's hashing (``hashlib`` constructors and their objects' ``update`` / ``digest``,
``hmac``), which the formats and the boot stages use for measurements. Only the outermost
wrapped call is timed, so a primitive that calls another counts once, under its own category.
Everything that is not inside a wrapped call is the Python around the cryptography.

Not part of the ``cvm`` package (see ``timing.py``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib
import inspect
import pkgutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any

import cvm.crypto

HASHING = "SHA-1/256/384/512 (measurements, digests, AF)"
CATEGORIES = {
    "kdf": "keyslot KDF (PBKDF2-SHA512)",
    "xts": "AES-XTS (keyslot area, root sectors)",
    "memory_cipher": "memory engine AES (guest pages)",
    "aead": "AES-GCM (guest messages)",
    "tpm_kdf": "vTPM KDFa/HMAC/AES-CFB (sessions, objects)",
    "key_transport": "ECDH P-384 (state key release)",
    "drbg": "DRBG (seeded randomness)",
    "x509_build": "DER encoding (certificates)",
}
ASYMMETRIC = "RSA/ECC (Secure Boot, vTPM keys, reports, certificates)"
HASH_CONSTRUCTORS = ("sha1", "sha256", "sha384", "sha512", "new")


def category_of(module: str) -> str:
    """The category of the primitives in ``cvm.crypto.<module>``."""
    return CATEGORIES.get(module, ASYMMETRIC)


def _nothing() -> None:
    return None


class _TimedHash:
    """A hash object whose work is timed (``hashlib`` objects cannot be patched)."""

    __slots__ = ("_hash", "_timer")

    def __init__(self, inner: Any, timer: CryptoTimer) -> None:
        self._hash, self._timer = inner, timer

    def update(self, data: Any) -> None:
        self._timer.run(HASHING, self._hash.update, data)

    def digest(self) -> bytes:
        result: bytes = self._timer.run(HASHING, self._hash.digest)
        return result

    def hexdigest(self) -> str:
        result: str = self._timer.run(HASHING, self._hash.hexdigest)
        return result

    def copy(self) -> _TimedHash:
        return _TimedHash(self._hash.copy(), self._timer)

    @property
    def name(self) -> str:
        return str(self._hash.name)

    @property
    def digest_size(self) -> int:
        return int(self._hash.digest_size)

    @property
    def block_size(self) -> int:
        return int(self._hash.block_size)


class CryptoTimer:
    """Seconds and calls per category of primitive while installed."""

    def __init__(self, clock: Callable[[], float] = time.process_time) -> None:
        self.clock = clock  # CPU time by default: shares that other processes do not skew
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._depth = 0
        self._undo: list[tuple[Any, str, Any]] = []

    def run(self, category: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._depth:
            return function(*args, **kwargs)
        self._depth += 1
        start = self.clock()
        try:
            return function(*args, **kwargs)
        finally:
            self.seconds[category] += self.clock() - start
            self.calls[category] += 1
            self._depth -= 1

    def wrap(self, category: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            return self.run(category, function, *args, **kwargs)

        return timed

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def overhead_per_call(self, samples: int = 20_000) -> float:
        """The time a timed call of nothing adds inside its own interval (the clock readings
        and the call itself): what each counted call over-counts."""
        probe = CryptoTimer(self.clock)
        for _ in range(samples):
            probe.run("probe", _nothing)
        return probe.total / samples

    def corrected(self) -> dict[str, float]:
        """Seconds per category less the measuring's own cost inside each counted call."""
        each = self.overhead_per_call()
        return {name: max(0.0, value - self.calls[name] * each)
                for name, value in self.seconds.items()}

    # -- installing and removing the wrappers --------------------------------------------------
    def _set(self, owner: Any, name: str, value: Any) -> None:
        self._undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def _hash_constructor(self, constructor: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> _TimedHash:
            return _TimedHash(self.run(HASHING, constructor, *args, **kwargs), self)

        return timed

    def __enter__(self) -> CryptoTimer:
        replaced: dict[int, Any] = {}
        for name in HASH_CONSTRUCTORS:
            original = getattr(hashlib, name)
            replaced[id(original)] = self._hash_constructor(original)
            self._set(hashlib, name, replaced[id(original)])
        for name in ("digest", "new"):
            original = getattr(hmac, name)
            replaced[id(original)] = self.wrap(HASHING, original)
            self._set(hmac, name, replaced[id(original)])
        self._set(hashlib, "pbkdf2_hmac", self.wrap(CATEGORIES["kdf"], hashlib.pbkdf2_hmac))
        for info in pkgutil.iter_modules(cvm.crypto.__path__):
            module = importlib.import_module(f"cvm.crypto.{info.name}")
            category = category_of(info.name)
            for name, value in list(vars(module).items()):
                if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                    continue
                if inspect.isfunction(value):
                    replaced[id(value)] = self.wrap(category, value)
                    self._set(module, name, replaced[id(value)])
                elif inspect.isclass(value):
                    self._wrap_methods(value, category)
        for module in list(sys.modules.values()):
            if isinstance(module, ModuleType) and module.__name__.startswith("cvm."):
                for name, value in list(vars(module).items()):
                    wrapper = replaced.get(id(value))
                    if wrapper is not None and value is not wrapper:
                        self._set(module, name, wrapper)
        return self

    def _wrap_methods(self, cls: type, category: str) -> None:
        for name, value in list(vars(cls).items()):
            if name.startswith("_") or not inspect.isfunction(value):
                continue
            self._set(cls, name, self.wrap(category, value))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        while self._undo:
            owner, name, original = self._undo.pop()
            setattr(owner, name, original)
