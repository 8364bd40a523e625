"""NV indices: ordinary data, monotonic counters, extend indices, access rules."""

from __future__ import annotations

import hashlib

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmaNv, TpmNt, TpmRh
from cvm.formats.tpm2.nv_public import NvPublic
from cvm.formats.tpm2.response_code import TpmRc, for_parameter
from cvm.guest.tpm.client import Auth, TpmClient

INDEX = 0x01500001
RW = TpmaNv.AUTHREAD | TpmaNv.AUTHWRITE | TpmaNv.OWNERREAD | TpmaNv.NO_DA


def _define(client: TpmClient, nt: TpmNt, size: int, auth: bytes = b"",
            attributes: int = RW) -> NvPublic:
    public = NvPublic(INDEX, TpmAlg.SHA256, attributes | nt << 4, b"", size)
    client.nv_define_space(public, auth)
    return public


def test_ordinary_index(client: TpmClient) -> None:
    public = _define(client, TpmNt.ORDINARY, 16, b"nvpw")
    with pytest.raises(StatusError) as refused:
        client.nv_read(INDEX, 4, auth=Auth(b"nvpw"))
    assert refused.value.code == TpmRc.NV_UNINITIALIZED
    client.nv_write(INDEX, b"abcd", 2, auth=Auth(b"nvpw"))
    assert client.nv_read(INDEX, 8, auth=Auth(b"nvpw")) == b"\xff\xffabcd\xff\xff"
    assert client.nv_read(INDEX, 4, 2, auth_handle=TpmRh.OWNER) == b"abcd"
    written, name = client.nv_read_public(INDEX)
    assert written.attributes & TpmaNv.WRITTEN
    assert name == written.name() != public.name()
    with pytest.raises(StatusError) as refused:
        client.nv_write(INDEX, b"x" * 20, auth=Auth(b"nvpw"))
    assert refused.value.code == TpmRc.NV_RANGE
    with pytest.raises(StatusError) as refused:
        client.nv_write(INDEX, b"x", auth=Auth(), auth_handle=TpmRh.OWNER)
    assert refused.value.code == TpmRc.NV_AUTHORIZATION
    with pytest.raises(StatusError) as refused:
        client.nv_write(INDEX, b"x", auth=Auth(b"wrong"))
    assert refused.value.code == 0x9A2  # TPM_RC_BAD_AUTH: the index is noDA
    with pytest.raises(StatusError) as refused:
        client.nv_define_space(public)
    assert refused.value.code == TpmRc.NV_DEFINED


def test_counter_is_monotonic_across_redefinition(client: TpmClient) -> None:
    _define(client, TpmNt.COUNTER, 8)
    for _ in range(3):
        client.nv_increment(INDEX)
    assert int.from_bytes(client.nv_read(INDEX, 8), "big") == 3
    with pytest.raises(StatusError) as refused:
        client.nv_write(INDEX, bytes(8))
    assert refused.value.code == 0x282  # TPM_RC_ATTRIBUTES (handle 2)
    client.nv_undefine_space(INDEX)
    _define(client, TpmNt.COUNTER, 8)
    client.nv_increment(INDEX)
    assert int.from_bytes(client.nv_read(INDEX, 8), "big") == 4


def test_counter_size_and_extend_index(client: TpmClient) -> None:
    with pytest.raises(StatusError) as refused:
        _define(client, TpmNt.COUNTER, 4)
    assert refused.value.code == for_parameter(TpmRc.SIZE, 2)
    _define(client, TpmNt.EXTEND, 32)
    client.nv_extend(INDEX, b"event")
    expected = hashlib.sha256(bytes(32) + b"event").digest()
    assert client.nv_read(INDEX, 32) == expected


def test_written_bit_cannot_be_defined(client: TpmClient) -> None:
    with pytest.raises(StatusError) as refused:
        _define(client, TpmNt.ORDINARY, 8, attributes=RW | TpmaNv.WRITTEN)
    assert refused.value.code == for_parameter(TpmRc.ATTRIBUTES, 2)
