"""The keyslot KDFs against independent implementations (hashlib's PBKDF2, OpenSSL's Argon2 in
``cryptography``), every refusal of a parameter out of range with its message, and the
calibration's arithmetic on a clock the test controls."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.kdf.argon2 import Argon2i, Argon2id

from cvm.crypto import kdf
from cvm.errors import UsageError

SECRET, SALT = b"correct horse", b"0123456789abcdef"


def test_the_pbkdf2_hashes_are_sha1_sha256_sha512() -> None:
    assert kdf.hash_names() == ("sha1", "sha256", "sha512")


@pytest.mark.parametrize("name", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize(("iterations", "length"), [(1, 1), (3, 20), (1000, 64), (2, 100)])
def test_pbkdf2_equals_hashlib(name: str, iterations: int, length: int) -> None:
    assert kdf.pbkdf2(name, SECRET, SALT, iterations, length) == hashlib.pbkdf2_hmac(
        name, SECRET, SALT, iterations, length)


def test_pbkdf2_refusals() -> None:
    with pytest.raises(UsageError, match=r"^unsupported PBKDF2 hash 'md5'$"):
        kdf.pbkdf2("md5", SECRET, SALT, 1000, 32)
    for iterations, length in ((0, 32), (1000, 0), (-1, 32)):
        with pytest.raises(UsageError, match=r"^PBKDF2 needs at least one iteration and one "
                                             r"output byte$"):
            kdf.pbkdf2("sha256", SECRET, SALT, iterations, length)


@pytest.mark.parametrize(("kind", "oracle"), [("argon2id", Argon2id), ("argon2i", Argon2i)])
@pytest.mark.parametrize(("time_cost", "memory", "lanes", "length"),
                         [(1, 8, 1, 4), (2, 64, 2, 32), (3, 40, 4, 64)])
def test_argon2_equals_openssl(kind: kdf.Argon2Type, oracle: type[Argon2id], time_cost: int,
                               memory: int, lanes: int, length: int) -> None:
    expected = oracle(salt=SALT, length=length, iterations=time_cost, lanes=lanes,
                      memory_cost=memory).derive(SECRET)
    assert kdf.argon2(kind, SECRET, SALT, time_cost, memory, lanes, length) == expected


def test_argon2_refusals() -> None:
    with pytest.raises(UsageError, match=r"^unsupported Argon2 type 'argon2d'$"):
        kdf.argon2("argon2d", SECRET, SALT, 1, 64, 1, 32)  # type: ignore[arg-type]
    for time_cost, memory, lanes, length in ((0, 64, 1, 32), (1, 64, 0, 32), (1, 15, 2, 32),
                                             (1, 64, 1, 3)):
        with pytest.raises(UsageError) as refused:
            kdf.argon2("argon2id", SECRET, SALT, time_cost, memory, lanes, length)
        assert str(refused.value) == (
            f"Argon2 costs out of range: time {time_cost}, memory {memory} KiB, "
            f"lanes {lanes}, length {length}")
    assert len(kdf.argon2("argon2id", SECRET, SALT, 1, 16, 2, 4)) == 4  # the edges accepted
    with pytest.raises(UsageError, match=r"^Argon2 refused its parameters: .*[Ss]alt"):
        kdf.argon2("argon2id", SECRET, b"short", 1, 64, 1, 32)


class Clock:
    """perf_counter that reads 64 s, then 64 s + ``elapsed`` (sums exact in binary)."""

    def __init__(self, elapsed: float) -> None:
        self.readings: Iterator[float] = iter((64.0, 64.0 + elapsed))

    def __call__(self) -> float:
        return next(self.readings)


def test_pbkdf2_calibration_scales_the_probe_to_the_time_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kdf.time, "perf_counter", Clock(0.5))
    # 20,000 iterations took 0.5 s: 2 s buys 80,000
    assert kdf.calibrate_pbkdf2("sha256", 2000, 32) == 80000
    monkeypatch.setattr(kdf.time, "perf_counter", Clock(1.0))
    assert kdf.calibrate_pbkdf2("sha256", 1, 32) == kdf.PBKDF2_MIN_ITERATIONS == 1000
    monkeypatch.setattr(kdf.time, "perf_counter", Clock(0.0))  # no measurable time: 1 µs
    assert kdf.calibrate_pbkdf2("sha1", 1, 20) == 20000 * 1000
    with pytest.raises(UsageError, match=r"^--iter-time must be at least 1 ms$"):
        kdf.calibrate_pbkdf2("sha256", 0, 32)


def test_argon2_calibration_scales_one_pass_to_the_time_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kdf.time, "perf_counter", Clock(0.5))
    # 4 passes took 0.5 s: 1 s buys 8 passes
    assert kdf.calibrate_argon2("argon2id", 1000, 64, 1, 32) == 8
    monkeypatch.setattr(kdf.time, "perf_counter", Clock(4.0))
    assert kdf.calibrate_argon2("argon2i", 1000, 64, 1, 32) == kdf.ARGON2_MIN_TIME == 4
    monkeypatch.setattr(kdf.time, "perf_counter", Clock(0.0))
    assert kdf.calibrate_argon2("argon2id", 1, 64, 1, 32) == 1000
    with pytest.raises(UsageError, match=r"^--iter-time must be at least 1 ms$"):
        kdf.calibrate_argon2("argon2id", 0, 64, 1, 32)
