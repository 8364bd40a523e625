"""The hash algorithms of the event-log banks (TCG Algorithm Registry Table 3): each bank's
TPM_ALG_ID, name and digest size, the hash it computes (checked against published digests of
"abc", not against the library it calls), and the refusal of an id or a name cvm does not know."""

from __future__ import annotations

import hashlib

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.tcg.algorithm import (
    ALGORITHMS_BY_ID,
    algorithm_by_id,
    algorithm_by_name,
)

# FIPS 180-4 example digests of "abc" (sha1 and SHA-2) and GB/T 32905-2016 Appendix A (SM3).
ABC = {
    "sha1": "a9993e364706816aba3e25717850c26c9cd0d89d",
    "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    "sha384": "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
              "8086072ba1e7cc2358baeca134c825a7",
    "sha512": "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
              "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    "sm3_256": "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0",
}


@pytest.mark.parametrize(("alg_id", "name", "size"), [
    (0x0004, "sha1", 20), (0x000B, "sha256", 32), (0x000C, "sha384", 48),
    (0x000D, "sha512", 64), (0x0012, "sm3_256", 32),
])
def test_each_bank(alg_id: int, name: str, size: int) -> None:
    algorithm = algorithm_by_id(alg_id)
    assert (algorithm.alg_id, algorithm.name, algorithm.digest_size) == (alg_id, name, size)
    assert algorithm_by_name(name) is algorithm
    assert algorithm_by_name(name.upper()) is algorithm
    assert algorithm.digest(b"abc").hex() == ABC[name]
    hasher = algorithm.constructor()(b"ab")
    hasher.update(b"c")
    assert hasher.digest().hex() == ABC[name]
    assert len(algorithm.digest(b"")) == size


def test_exactly_five_banks_are_known() -> None:
    assert sorted(ALGORITHMS_BY_ID) == [0x0004, 0x000B, 0x000C, 0x000D, 0x0012]


@pytest.mark.parametrize("alg_id", [0x0000, 0x0001, 0x0010, 0x0099, 0xFFFF])
def test_an_unknown_algorithm_id_is_refused(alg_id: int) -> None:
    with pytest.raises(FormatError) as caught:
        algorithm_by_id(alg_id)
    assert str(caught.value) == f"unknown TPM_ALG_ID {alg_id:#06x} in event log"


@pytest.mark.parametrize("name", ["md5", "sha3_256", "sm3", ""])
def test_an_unknown_bank_name_is_refused_listing_the_known_ones(name: str) -> None:
    with pytest.raises(UsageError) as caught:
        algorithm_by_name(name)
    assert str(caught.value) == (f"unknown PCR bank {name!r} "
                                 "(known: sha1, sha256, sha384, sha512, sm3_256)")


def test_the_constructor_is_hashlibs_own_where_hashlib_has_one() -> None:
    # The replay builds one hasher per bank per record: hashlib's named constructors, not the
    # generic hashlib.new, wherever the name exists (SM3 has only hashlib.new).
    assert algorithm_by_id(0x000B).constructor() is hashlib.sha256
    assert algorithm_by_id(0x0004).constructor() is hashlib.sha1
    assert algorithm_by_id(0x000D).constructor() is hashlib.sha512
