"""Where a run spends its time on cryptography: a timing wrapper around every primitive, installed
by a benchmark only (``with CryptoTimer() as timer: ...``).

Wrapped, where they are called: every public function and method of ``cvm.crypto`` (the only
door to ``cryptography``), rebound in every ``cvm`` module that imported it by name; and the
standard library's hashing (``hashlib`` constructors and their objects' ``update`` / ``digest``,
``hmac``), which the formats and the boot stages use for measurements. Only the outermost
wrapped call is timed, so a primitive that calls another counts once, under its own category.
Everything that is not inside a wrapped call is the Python around the cryptography. The few
public functions of ``cvm.crypto`` that parse or encode rather than compute (certificates, PKCS#7,
PEM: :data:`PARSING`) are not wrapped: their time is the Python's, and the cryptography they
call (a fingerprint's hash, say) is still counted where it is called.

The LUKS anti-forensic splitter (``af_split`` / ``af_merge``) is timed whole, as one
primitive: the chain of one hash per stripe and the XORs between them is a cryptographic
construction LUKS2 requires of every keyslot open, which cryptsetup runs in C; in cvm it is
Python around ``hashlib`` (the formats layer has no ``cryptography``), as the memory engine's XEX
mode is numpy around AES. :meth:`CryptoTimer.af_hash_seconds` prices its hashes apart, so the
Python share of the construction is known too.

Small hash calls are not timed one by one: a boot makes ~5,000 of them besides the AF
splitter's (which hashes 4,000 blocks of 68 bytes for the token's keyslot), each about a
microsecond, where a
clock reading costs about as much as the work and the correction for it would decide the
figure. They are
counted by algorithm, operation and input length instead, and :meth:`CryptoTimer.corrected`
prices each kind at its cost measured in the same process afterwards (the fastest of several
tight loops of the same call on an input of the same length, less the loop's own cost), so
their share neither includes the timer's cost nor depends on correcting for it.

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
from cvm.crypto.memory_cipher import PAGE_SIZE, XexMemoryCipher
from cvm.formats.luks2 import anti_forensic

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
    "af": "LUKS2 AF splitter (the keyslot's hash diffuser chain)",
}
ASYMMETRIC = "RSA/ECC (Secure Boot, vTPM keys, reports, certificates)"
HASH_CONSTRUCTORS = ("sha1", "sha256", "sha384", "sha512", "new")
# cvm.crypto functions that parse or encode: not cryptography, left unwrapped
PARSING = frozenset({
    "authenticode.AuthenticodeSignature.parse",  # a classmethod: never wrapped in any case
    "pkcs7.parse_signed_data", "pkcs7.parse_any",
    "tpm_keys.load_public_pem",
    "x509_chain.parse_certificate", "x509_chain.certificate_ders",
    "x509_chain.load_certificates", "x509_chain.parse_crl",
    "x509_edk2.load_certificate", "x509_edk2.der",
})
MEMORY_CIPHER_DATA = ("encrypt", "decrypt", "encrypt_into", "decrypt_into", "encrypt_page",
                      "decrypt_page")
SMALL_HASH = 4096  # inputs up to this many bytes are priced by calibration, not timed per call
_CALIBRATION_LOOPS = 5


def category_of(module: str) -> str:
    """The category of the primitives in ``cvm.crypto.<module>``."""
    return CATEGORIES.get(module, ASYMMETRIC)


def _nothing() -> None:
    return None


def _length(data: Any) -> int | None:
    """The byte length of a hash input, or None where it has none (then the call is timed)."""
    try:
        return memoryview(data).nbytes
    except TypeError:
        return None


def _split_key_size(args: tuple[Any, ...]) -> tuple[int, int, str]:
    key, stripes, algorithm = args[:3]  # af_split(key, stripes, hash_name, random)
    return len(key), stripes, algorithm


def _merge_key_size(args: tuple[Any, ...]) -> tuple[int, int, str]:
    _, size, stripes, algorithm = args[:4]  # af_merge(material, key_size, stripes, hash_name)
    return size, stripes, algorithm


class _PlainHashes:
    """The ``hashlib`` the AF splitter sees while it is timed whole: the constructors as they
    were before the timer wrapped them."""

    def __init__(self, constructors: dict[str, Callable[..., Any]]) -> None:
        self.__dict__.update(constructors)


class _TimedHash:
    """A hash object whose work is timed (``hashlib`` objects cannot be patched)."""

    __slots__ = ("_hash", "_timer")

    def __init__(self, inner: Any, timer: CryptoTimer) -> None:
        self._hash, self._timer = inner, timer

    def update(self, data: Any) -> None:
        self._timer.hash_call("update", self._hash.name, self._hash.update, data)

    def digest(self) -> bytes:
        result: bytes = self._timer.hash_call("digest", self._hash.name, self._hash.digest)
        return result

    def hexdigest(self) -> str:
        result: str = self._timer.hash_call("hexdigest", self._hash.name, self._hash.hexdigest)
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
        # small hash calls by (operation, algorithm, input length): priced in corrected()
        self.small_hashes: Counter[tuple[str, str, int]] = Counter()
        self._constructors: dict[str, Callable[..., Any]] = {}
        self.memory_bytes = 0  # bytes through the memory engine's cipher (outermost calls)
        # the AF splitter's hashes by (algorithm, input length): priced in af_hash_seconds()
        self.af_hashes: Counter[tuple[str, int]] = Counter()
        self._constructors_before: dict[str, Callable[..., Any]] = {}

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

    def hash_call(self, operation: str, algorithm: str, function: Callable[..., Any],
                  *args: Any) -> Any:
        """A hash operation: counted for pricing if small and not inside another timed call,
        timed like any primitive otherwise."""
        if self._depth:
            return function(*args)
        size = _length(args[0]) if args else 0
        if size is None or size > SMALL_HASH:
            return self.run(HASHING, function, *args)
        self.small_hashes[operation, algorithm, size] += 1
        self.calls[HASHING] += 1
        return function(*args)

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
        """Seconds per category less the measuring's own cost inside each counted call, the
        small hash calls priced at their calibrated cost."""
        each = self.overhead_per_call()
        timed_calls = Counter(self.calls)
        timed_calls[HASHING] -= sum(self.small_hashes.values())
        result = {name: max(0.0, value - timed_calls[name] * each)
                  for name, value in self.seconds.items()}
        if self.small_hashes:
            priced = sum(count * self.unit_cost(*kind) for kind, count in self.small_hashes.items())
            result[HASHING] = result.get(HASHING, 0.0) + priced
        return result

    def unit_cost(self, operation: str, algorithm: str, size: int) -> float:
        """Seconds one small hash operation takes here: the fastest of several tight loops of
        it on ``size`` zero bytes, less the same loop's cost without the call (``new`` is the
        constructor; ``update`` takes the input; ``digest``/``hexdigest`` do not finalise a
        hashlib object, so one object serves every round)."""
        new = self._constructors.get(algorithm)
        if new is None:
            new = functools.partial(hashlib.new, algorithm)
        data, ready = bytes(size), new()
        update, finish = ready.update, getattr(ready, operation, ready.digest)

        # each a Python frame, as _nothing in per_call: the loops differ by the call alone
        def construct() -> object:
            return new(data)

        def feed() -> object:
            return update(data)

        def end() -> object:
            return finish()

        call = {"new": construct, "update": feed}.get(operation, end)
        return self.per_call(call, 2000 if size <= 256 else 200)

    def per_call(self, call: Callable[[], object], loops: int) -> float:
        """Seconds one ``call()`` costs: the fastest of several tight loops of it, less the same
        loop's cost calling a Python function that does nothing (``call`` is one, too)."""
        best = float("inf")
        for _ in range(_CALIBRATION_LOOPS):
            start = self.clock()
            for _ in range(loops):
                call()
            middle = self.clock()
            for _ in range(loops):
                _nothing()
            best = min(best, (middle - start) - (self.clock() - middle))
        return max(0.0, best / loops)

    # -- installing and removing the wrappers --------------------------------------------------
    def _set(self, owner: Any, name: str, value: Any) -> None:
        self._undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def _hash_constructor(self, name: str, constructor: Callable[..., Any]
                          ) -> Callable[..., Any]:
        if name != "new":
            self._constructors[name] = constructor

        def timed(*args: Any, **kwargs: Any) -> _TimedHash:
            if name == "new" or kwargs or len(args) > 1:  # hashlib.new(name, data): timed
                return _TimedHash(self.run(HASHING, constructor, *args, **kwargs), self)
            return _TimedHash(self.hash_call("new", name, constructor, *args), self)

        return timed

    def __enter__(self) -> CryptoTimer:
        replaced: dict[int, Any] = {}
        self._constructors_before = {name: getattr(hashlib, name) for name in HASH_CONSTRUCTORS}
        for name in HASH_CONSTRUCTORS:
            original = getattr(hashlib, name)
            replaced[id(original)] = self._hash_constructor(name, original)
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
                if (name.startswith("_") or getattr(value, "__module__", None) != module.__name__
                        or f"{info.name}.{name}" in PARSING):
                    continue
                if inspect.isfunction(value):
                    replaced[id(value)] = self.wrap(category, value)
                    self._set(module, name, replaced[id(value)])
                elif inspect.isclass(value):
                    self._wrap_methods(value, category)
        self._wrap_af(replaced)
        for module in list(sys.modules.values()):
            if isinstance(module, ModuleType) and module.__name__.startswith("cvm."):
                for name, value in list(vars(module).items()):
                    wrapper = replaced.get(id(value))
                    if wrapper is not None and value is not wrapper:
                        self._set(module, name, wrapper)
        return self

    def _wrap_af(self, replaced: dict[int, Any]) -> None:
        """The LUKS anti-forensic splitter, timed whole as one primitive (a chain of one hash
        per stripe and block, and the XORs between them, that cryptsetup runs in C): its own
        hashes run unwrapped inside it, and are counted for :meth:`af_hash_seconds`."""
        self._set(anti_forensic, "hashlib", _PlainHashes(self._constructors_before))
        for name, key_size in (("af_split", _split_key_size), ("af_merge", _merge_key_size)):
            original = getattr(anti_forensic, name)
            timed = self.wrap(CATEGORIES["af"], original)

            def counted(*args: Any, _timed: Any = timed, _size: Any = key_size) -> Any:
                if not self._depth:
                    size, stripes, algorithm = _size(args)
                    width = self._constructors_before["new"](algorithm).digest_size
                    for start in range(0, size, width):
                        self.af_hashes[algorithm, min(width, size - start) + 4] += stripes - 1
                return _timed(*args)

            replaced[id(original)] = counted
            self._set(anti_forensic, name, counted)

    def af_hash_seconds(self) -> float:
        """Of the AF splitter's time, its hashes' own: each priced as a small hash call (the
        rest is the chain's XORs and conversions, in Python)."""
        return sum(count * (self.unit_cost("new", algorithm, size)
                            + self.unit_cost("digest", algorithm, size))
                   for (algorithm, size), count in self.af_hashes.items())

    def _wrap_methods(self, cls: type, category: str) -> None:
        module = cls.__module__.rsplit(".", 1)[-1]
        for name, value in list(vars(cls).items()):
            if (name.startswith("_") or not inspect.isfunction(value)
                    or f"{module}.{cls.__name__}.{name}" in PARSING):
                continue
            wrapper = self.wrap(category, value)
            if cls is XexMemoryCipher and name in MEMORY_CIPHER_DATA:
                wrapper = self._counting_memory(wrapper)
            self._set(cls, name, wrapper)

    def _counting_memory(self, timed: Callable[..., Any]) -> Callable[..., Any]:
        def counted(cipher: Any, address: int, data: Any, *rest: Any) -> Any:
            if not self._depth:
                self.memory_bytes += memoryview(data).nbytes
            return timed(cipher, address, data, *rest)

        return counted

    def memory_block_cipher_seconds(self) -> float:
        """Of the memory engine's time, the AES block cipher's own: the bytes it ciphered at
        the cost of one ECB call on a page, measured here (the rest is the XEX mode around it:
        the address tweak and the XORs before and after, done in software)."""
        engine = XexMemoryCipher(bytes(16))
        page = bytearray(PAGE_SIZE)
        out = bytearray(PAGE_SIZE + 16)
        update_into = engine._encryptor.update_into

        def call() -> object:
            return update_into(page, out)

        return self.per_call(call, 500) * self.memory_bytes / PAGE_SIZE

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        while self._undo:
            owner, name, original = self._undo.pop()
            setattr(owner, name, original)
