"""The TPM hash algorithms: hashlib names and digest sizes, and the refusal of any other."""

from __future__ import annotations

import hashlib

import pytest

from cvm.errors import FormatError
from cvm.formats.tpm2.constants import TpmAlg, digest, digest_size, hash_name


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
