"""Seeded probable primes (:mod:`cvm.crypto.rsa_prime`) against oracles written here: trial
division for the small-prime table and the sieve, known primes and strong pseudoprimes for
Miller-Rabin, and a plain odd-by-odd scan for the seeded search."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.crypto import rsa_prime
from cvm.crypto.drbg import SeededRandom
from cvm.crypto.rsa_prime import (
    SIEVE_PRIMES,
    composites_window,
    miller_rabin,
    odd_primes_below,
    private_key_from_primes,
    seeded_prime,
)

SMALL_PRODUCT = math.prod(SIEVE_PRIMES)


def _is_prime_by_division(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


@pytest.mark.parametrize("bound", [0, 1, 2, 3, 4, 5, 9, 10, 25, 26, 49, 50, 121, 122, 1000])
def test_odd_primes_below_a_bound_are_those_trial_division_finds(bound: int) -> None:
    expected = tuple(n for n in range(3, bound) if _is_prime_by_division(n))
    assert odd_primes_below(bound) == expected


def test_the_sieve_table_is_every_odd_prime_below_2_to_the_18() -> None:
    """pi(2^18) = 23000 (OEIS A007053), less the prime 2; the largest is 262139."""
    assert odd_primes_below(1 << 18) == SIEVE_PRIMES
    assert len(SIEVE_PRIMES) == 22999 and SIEVE_PRIMES[:4] == (3, 5, 7, 11)
    assert SIEVE_PRIMES[-1] == 262139


@settings(max_examples=25, deadline=None)
@given(st.integers(1 << 200, 1 << 512).map(lambda n: n | 1), st.integers(1, 700))
def test_the_window_marks_exactly_the_values_with_a_small_factor(start: int, window: int) -> None:
    sieve = composites_window(start, window)
    assert len(sieve) == window
    for index in range(window):
        assert bool(sieve[index]) == (math.gcd(start + 2 * index, SMALL_PRODUCT) > 1), index


def test_the_window_marks_a_small_prime_past_the_window_start() -> None:
    """Starts whose first multiple of 262139 (the largest sieving prime) is the last index."""
    p = SIEVE_PRIMES[-1]
    start = p * (1 << 300) + p - 2 * 9  # start + 2*9 is a multiple of p, start is odd
    start += 0 if start % 2 else p
    sieve = composites_window(start, 10)
    expected = [math.gcd(start + 2 * i, SMALL_PRODUCT) > 1 for i in range(10)]
    assert [bool(b) for b in sieve] == expected and any(expected)


KNOWN_PRIMES = [5, 7, 13, 97, 7919, (1 << 61) - 1, (1 << 89) - 1, (1 << 127) - 1,
                2**255 - 19]
# Carmichael numbers and strong pseudoprimes: a Fermat test passes them, Miller-Rabin must not.
KNOWN_COMPOSITES = [9, 15, 21, 25, 561, 1105, 1729, 2047, 3215031751, 3825123056546413051,
                    ((1 << 61) - 1) * ((1 << 89) - 1)]


@pytest.mark.parametrize("n", KNOWN_PRIMES)
def test_a_prime_passes_every_base(n: int) -> None:
    assert miller_rabin(n, range(2, min(n - 1, 60)))
    assert miller_rabin(n, [n - 2, n - 1, 1])
    assert miller_rabin(n, [])


@pytest.mark.parametrize("n", KNOWN_COMPOSITES)
def test_a_composite_is_witnessed_by_some_small_base(n: int) -> None:
    assert not miller_rabin(n, range(2, 42))


def test_strong_pseudoprimes_pass_their_bases_only() -> None:
    """2047 = 23 * 89 is a strong pseudoprime to base 2; 3215031751 to bases 2, 3, 5 and 7;
    3825123056546413051 to every prime base up to 23 (and 29, 31, 37 find it)."""
    assert miller_rabin(2047, [2]) and not miller_rabin(2047, [3])
    assert miller_rabin(3215031751, [2, 3, 5, 7]) and not miller_rabin(3215031751, [11])
    assert miller_rabin(3825123056546413051, [2, 3, 5, 7, 11, 13, 17, 19, 23])
    assert not miller_rabin(3825123056546413051, [37])


def test_a_base_reaching_minus_one_after_squarings_passes() -> None:
    """For 97 (97 - 1 = 3 * 2^5), base 2: 2^3 = 8, then 64, 22, 96 = -1 after three squarings;
    base 96 is -1 at once, and 1 passes at once."""
    assert pow(2, 3 * 4 * 2, 97) == 96
    assert miller_rabin(97, [2]) and miller_rabin(97, [96]) and miller_rabin(97, [1])
    assert not miller_rabin(91, [2])  # 91 = 7 * 13
    assert miller_rabin(91, [90])  # -1 passes any odd candidate


def test_bases_are_drawn_only_until_the_first_witness() -> None:
    drawn: list[int] = []

    def bases(values: list[int]) -> Iterator[int]:
        for value in values:
            drawn.append(value)
            yield value

    assert not miller_rabin(2047, bases([2, 3, 5, 7]))
    assert drawn == [2, 3]
    drawn.clear()
    assert miller_rabin(7919, bases([2, 3, 5]))
    assert drawn == [2, 3, 5]


def _scan(bits: int, seed: bytes, exponent: int) -> int:
    """The specification of the seeded search, without a sieve: from each seeded start (top
    two bits and the low bit set), the first odd value with p - 1 not a multiple of e that is
    prime; a start whose window leaves ``bits`` bits is abandoned for the next."""
    stream = SeededRandom(seed)
    while True:
        start = int.from_bytes(stream(bits // 8), "big") | (3 << (bits - 2)) | 1
        for index in range(rsa_prime.SIEVE_WINDOW):
            value = start + 2 * index
            if value.bit_length() != bits:
                break
            if (value - 1) % exponent and miller_rabin(value, [2, 3, 5, 7, 11, 13, 17, 19,
                                                               23, 29, 31, 37, 41]):
                return value


@pytest.mark.parametrize(("bits", "seed", "exponent"), [
    (256, b"a", 65537), (256, b"b", 3), (512, b"c", 65537), (384, b"d", 3), (64, b"e", 3)])
def test_the_seeded_prime_is_the_first_prime_at_or_after_the_seeded_start(
        bits: int, seed: bytes, exponent: int) -> None:
    prime = seeded_prime(bits, SeededRandom(seed), SeededRandom(b"w" + seed), exponent, 8)
    assert prime == _scan(bits, seed, exponent)
    assert prime.bit_length() == bits and prime >> (bits - 2) == 3
    assert (prime - 1) % exponent


def _starts(*values: int) -> Iterator[bytes]:
    return iter([value.to_bytes(4, "big") for value in values])


def test_a_start_whose_window_overflows_the_size_moves_to_the_next_start() -> None:
    """A first start of all ones: 2^32 - 1 = 3 * 5 * 17 * 257 * 65537 and the next odd value
    has 33 bits, so the second start (0xC0000001, a prime) gives the answer."""
    starts = _starts(0xFFFFFFFF, 0xC0000001)

    def stream(size: int) -> bytes:
        assert size == 4
        return next(starts)

    assert seeded_prime(32, stream, SeededRandom(b"w"), 65537, 4) == 0xC0000001  # type: ignore[arg-type]


@pytest.mark.parametrize(("raw", "exponent", "expected"), [
    (0x00000000, 5, 0xC0000001),  # the top two bits and the low bit are set on the start
    (0xC0000001, 5, 0xC0000001),  # a prime start is its own answer
    (0xC0000001, 3, 0xC000004D),  # 3 divides 0xC0000001 - 1: the next prime = 2 mod 3
    (0x40000000, 65537, 0xC0000001)])
def test_the_start_bits_and_the_exponent_rule(raw: int, exponent: int, expected: int) -> None:
    assert _is_prime_by_division(expected)
    assert all(not _is_prime_by_division(n) or (n - 1) % exponent == 0
               for n in range(0xC0000001, expected, 2))
    starts = _starts(raw)
    assert seeded_prime(32, lambda size: next(starts), SeededRandom(b"w"),  # type: ignore[arg-type]
                        exponent, 4) == expected


def test_the_bases_come_from_the_witness_stream_in_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each candidate gets ``rounds`` bases ``2 + w mod (c - 3)``, w of the candidate's byte
    length drawn from the witness stream: a base is never 0, 1 or c - 1."""
    seen: list[tuple[int, list[int]]] = []
    real = rsa_prime.miller_rabin

    def recording(candidate: int, bases: Iterator[int]) -> bool:
        values = list(bases)
        seen.append((candidate, values))
        return real(candidate, values)

    monkeypatch.setattr(rsa_prime, "miller_rabin", recording)
    drawn: list[int] = []
    fills = iter([b"\x00", b"\xff", b"\x01"] * 1000)

    def witnesses(size: int) -> bytes:
        assert size == 16
        value = next(fills) * size
        drawn.append(int.from_bytes(value, "big"))
        return value

    prime = seeded_prime(128, SeededRandom(b"s"), witnesses, 65537, 3)  # type: ignore[arg-type]
    assert seen and seen[-1][0] == prime and len(drawn) == 3 * len(seen)
    draws = iter(drawn)
    for candidate, values in seen:
        assert values == [next(draws) % (candidate - 3) + 2 for _ in range(3)]
        assert all(2 <= v <= candidate - 2 for v in values)
    assert 2 in seen[0][1]


def test_a_key_from_primes_is_the_rfc_8017_crt_key() -> None:
    p, q, e = (1 << 127) - 1, 2**255 - 19, 65537
    key = private_key_from_primes(p, q, e)
    numbers = key.private_numbers()
    d = pow(e, -1, (p - 1) * (q - 1))
    assert (numbers.p, numbers.q, numbers.d) == (p, q, d)
    assert (numbers.dmp1, numbers.dmq1, numbers.iqmp) == (d % (p - 1), d % (q - 1),
                                                          pow(q, -1, p))
    assert numbers.public_numbers.n == p * q and numbers.public_numbers.e == e
    message = 123456789
    assert pow(pow(message, e, p * q), d, p * q) == message
