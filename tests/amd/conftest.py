"""One emulated Milan vendor per test session (RSA-4096 roots are slow to make), and fixed
test keys for the tests that make many roots."""

from __future__ import annotations

import functools
import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cvm.amd import DEFAULT_SEED, Vendor
from cvm.crypto.rsa_pss import RsaPrivateKey, private_key_from_pem

ISSUE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def milan_vendor() -> Vendor:
    return Vendor("Milan", DEFAULT_SEED, clock=lambda: ISSUE_TIME)


KEY_FILES = ("ark_private_key.pem", "ask_private_key.pem", "asvk_private_key.pem")


@functools.cache
def _load_test_keys(folder: Path) -> tuple[RsaPrivateKey, ...]:
    # Kept for the process (and its forks: the mutation runner forks one per mutant).
    return tuple(private_key_from_pem((folder / name).read_bytes()) for name in KEY_FILES)


@pytest.fixture(scope="session")
def test_rsa_keys(vectors: Path) -> tuple[RsaPrivateKey, ...]:
    """Three RSA-4096 keys go-sev-guest publishes for its fake PKI (test-only, trusted by
    nothing): loading them takes a second where generating one takes several."""
    return _load_test_keys(vectors / "snp/go-sev-guest/testing/data/keys")


@pytest.fixture
def fresh_keys(
    monkeypatch: pytest.MonkeyPatch, test_rsa_keys: tuple[RsaPrivateKey, ...]
) -> list[int]:
    """``generate_root`` draws its keys from the three test keys in turn (so the first three
    roots have three different ARKs); the list records the sizes it asked for."""
    asked: list[int] = []
    pool = itertools.cycle(test_rsa_keys)

    def new_private_key(bits: int = 4096) -> RsaPrivateKey:
        asked.append(bits)
        return next(pool)

    monkeypatch.setattr("cvm.amd.authority.new_private_key", new_private_key)
    return asked
