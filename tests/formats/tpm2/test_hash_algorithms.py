"""The TPM hash algorithms: hashlib names and digest sizes, and the refusal of any other."""

from __future__ import annotations

import hashlib

import pytest

from cvm.errors import FormatError
from cvm.formats.tpm2.constants import (
    TpmAlg,
    TpmHt,
    digest,
    digest_size,
    handle_type,
    hash_alg,
    hash_name,
    is_hash_alg,
)


@pytest.mark.parametrize("alg", [TpmAlg.SHA1, TpmAlg.SHA256, TpmAlg.SHA384, TpmAlg.SHA512])
def test_each_bank_algorithm_has_hashlibs_name_and_size(alg: TpmAlg) -> None:
    name = alg.name.lower()
    assert hash_name(alg) == hash_name(int(alg)) == name
    assert digest_size(alg) == digest_size(int(alg)) == hashlib.new(name).digest_size
    assert digest(int(alg), b"a", b"b") == hashlib.new(name, b"ab").digest()


@pytest.mark.parametrize("alg", [TpmAlg.RSA, TpmAlg.NULL, 0x7777, -1])
def test_another_algorithm_is_refused(alg: int) -> None:
    with pytest.raises(FormatError, match="is not a supported hash algorithm"):
        hash_name(alg)
    with pytest.raises(FormatError, match="is not a supported hash algorithm"):
        digest_size(alg)


@pytest.mark.parametrize(("name", "alg"), [
    ("sha1", TpmAlg.SHA1), ("SHA256", TpmAlg.SHA256), ("sha-256", TpmAlg.SHA256),
    ("SHA-384", TpmAlg.SHA384), ("Sha-512", TpmAlg.SHA512),
])
def test_a_bank_name_is_read_without_case_or_hyphens(name: str, alg: TpmAlg) -> None:
    assert hash_alg(name) is alg
    assert is_hash_alg(alg) and is_hash_alg(int(alg))


@pytest.mark.parametrize("name", ["md5", "sha", "sha_256", "sha3-256", "sm3_256", ""])
def test_another_bank_name_is_refused_by_name(name: str) -> None:
    with pytest.raises(FormatError) as refused:
        hash_alg(name)
    assert str(refused.value) == f"unknown hash algorithm or PCR bank {name!r}"


def test_the_refusal_names_the_algorithm_in_hexadecimal() -> None:
    with pytest.raises(FormatError) as refused:
        hash_name(0x0012)
    assert str(refused.value) == "TPM_ALG 0x0012 is not a supported hash algorithm"
    assert not is_hash_alg(TpmAlg.NULL) and not is_hash_alg(TpmAlg.HMAC)


@pytest.mark.parametrize(("handle", "kind"), [
    (0x00000017, TpmHt.PCR), (0x01C00002, TpmHt.NV_INDEX), (0x02000000, TpmHt.HMAC_SESSION),
    (0x03FFFFFF, TpmHt.POLICY_SESSION), (0x40000001, TpmHt.PERMANENT),
    (0x80000000, TpmHt.TRANSIENT), (0x81010001, TpmHt.PERSISTENT), (0xFFFFFFFF, 0xFF),
])
def test_a_handles_type_is_its_most_significant_byte(handle: int, kind: int) -> None:
    assert handle_type(handle) == kind
