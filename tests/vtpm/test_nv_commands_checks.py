"""The rules of the NV commands (Part 3 section 31), each refusal with its exact response code
and each limit at and one past its edge: which hierarchy defines and deletes which index,
the attributes DefineSpace refuses, which authorization reads or writes (owner, platform,
the index's password or policy), locks, ranges, WRITEALL, and the counter's floor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmaNv, TpmCc, TpmNt, TpmRh, TpmSe
from cvm.formats.tpm2.nv_public import MAX_NV_INDEX_SIZE, NvPublic
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.tpm2b import tpm2b, writer
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm

INDEX = 0x01500010
RW = TpmaNv.AUTHREAD | TpmaNv.AUTHWRITE | TpmaNv.NO_DA
BAD_ATTRIBUTES = for_parameter(TpmRc.ATTRIBUTES, 2)
PARSE_ERROR = for_parameter(TpmRc.SIZE, 1)  # an oversized TPM2B: its parameter, the first


def _public(attributes: int = RW, nt: TpmNt = TpmNt.ORDINARY, size: int = 16,
            policy: bytes = b"", index: int = INDEX) -> NvPublic:
    return NvPublic(index, TpmAlg.SHA256, attributes | nt << 4, policy, size)


def _code(call: Callable[[], object]) -> int:
    with pytest.raises(StatusError) as refused:
        call()
    return refused.value.code


def _define(client: TpmClient, public: NvPublic, auth: bytes = b"",
            hierarchy: int = TpmRh.OWNER) -> None:
    client.call(TpmCc.NV_DEFINE_SPACE, (hierarchy,), tpm2b(auth) + public.to_tpm2b(), (Auth(),))


def _undefine(client: TpmClient, hierarchy: int, index: int = INDEX) -> None:
    client.call(TpmCc.NV_UNDEFINE_SPACE, (hierarchy, index), b"", (Auth(),))


def _set_attribute(tpm: Tpm, flag: int, index: int = INDEX) -> None:
    """As a state file may carry it: the index with ``flag`` set."""
    entry = tpm.state.nv[index]
    tpm.state.nv[index] = replace(
        entry, public=entry.public.with_attributes(entry.public.attributes | flag))


# ---- NV_DefineSpace ---------------------------------------------------------------------------
def test_only_owner_or_platform_define_an_index(client: TpmClient) -> None:
    assert _code(lambda: _define(client, _public(), hierarchy=TpmRh.ENDORSEMENT)) == for_handle(
        TpmRc.HIERARCHY, 1)


def test_platformcreate_matches_the_hierarchy_that_defines(client: TpmClient) -> None:
    platform = _public(RW | TpmaNv.PLATFORMCREATE)
    assert _code(lambda: _define(client, platform)) == BAD_ATTRIBUTES
    assert _code(lambda: _define(client, _public(), hierarchy=TpmRh.PLATFORM)) == BAD_ATTRIBUTES
    _define(client, platform, hierarchy=TpmRh.PLATFORM)
    assert client.nv_read_public(INDEX)[0] == platform


@pytest.mark.parametrize("flag", [TpmaNv.WRITTEN, TpmaNv.WRITELOCKED, TpmaNv.READLOCKED])
def test_the_state_bits_cannot_be_defined(client: TpmClient, flag: int) -> None:
    assert _code(lambda: _define(client, _public(RW | flag))) == BAD_ATTRIBUTES


@pytest.mark.parametrize("attributes", [
    TpmaNv.AUTHREAD | TpmaNv.OWNERREAD, TpmaNv.AUTHWRITE | TpmaNv.PPWRITE, TpmaNv.NO_DA])
def test_an_index_needs_both_a_read_and_a_write_authorization(
        client: TpmClient, attributes: int) -> None:
    assert _code(lambda: _define(client, _public(attributes))) == BAD_ATTRIBUTES


def test_policy_delete_is_for_platform_indices(client: TpmClient) -> None:
    owner = _public(RW | TpmaNv.POLICY_DELETE)
    assert _code(lambda: _define(client, owner)) == BAD_ATTRIBUTES
    _define(client, _public(RW | TpmaNv.POLICY_DELETE | TpmaNv.PLATFORMCREATE),
            hierarchy=TpmRh.PLATFORM)
    assert client.nv_read_public(INDEX)[0].attributes & TpmaNv.POLICY_DELETE
    assert _code(lambda: _undefine(client, TpmRh.PLATFORM)) == for_handle(TpmRc.ATTRIBUTES, 2)


def test_the_auth_is_at_most_one_name_digest_and_its_tpm2b_at_most_64_bytes(
        client: TpmClient) -> None:
    _define(client, _public(), auth=b"a" * 32)
    client.nv_undefine_space(INDEX)
    _define(client, _public(), auth=b"a" * 32 + bytes(8))  # trailing zeros do not count
    client.nv_undefine_space(INDEX)
    assert _code(lambda: _define(client, _public(), auth=b"a" * 33)) == for_parameter(
        TpmRc.SIZE, 1)
    assert _code(lambda: _define(client, _public(), auth=b"a" * 65)) == PARSE_ERROR


def test_the_sizes_of_counters_extend_indices_and_any_index(client: TpmClient) -> None:
    size_2 = for_parameter(TpmRc.SIZE, 2)
    assert _code(lambda: _define(client, _public(nt=TpmNt.COUNTER, size=9))) == size_2
    assert _code(lambda: _define(client, _public(nt=TpmNt.BITS, size=4))) == size_2
    assert _code(lambda: _define(client, _public(nt=TpmNt.EXTEND, size=48))) == size_2
    assert _code(lambda: _define(client, _public(size=MAX_NV_INDEX_SIZE + 1))) == size_2
    _define(client, _public(size=MAX_NV_INDEX_SIZE))
    assert _code(lambda: _define(client, _public(size=8))) == TpmRc.NV_DEFINED


# ---- NV_UndefineSpace -------------------------------------------------------------------------
def test_each_hierarchy_deletes_only_its_own_indices(client: TpmClient) -> None:
    _define(client, _public())
    assert _code(lambda: _undefine(client, TpmRh.ENDORSEMENT)) == for_handle(TpmRc.HIERARCHY, 1)
    assert _code(lambda: _undefine(client, TpmRh.PLATFORM)) == for_handle(
        TpmRc.NV_AUTHORIZATION, 1)
    _undefine(client, TpmRh.OWNER)
    _define(client, _public(RW | TpmaNv.PLATFORMCREATE), hierarchy=TpmRh.PLATFORM)
    assert _code(lambda: _undefine(client, TpmRh.OWNER)) == for_handle(
        TpmRc.NV_AUTHORIZATION, 1)
    _undefine(client, TpmRh.PLATFORM)
    assert _code(lambda: client.nv_read_public(INDEX)) == for_handle(TpmRc.HANDLE, 1)


def test_only_a_counter_sets_the_floor_a_new_counter_starts_from(client: TpmClient) -> None:
    """Deleting an ordinary index whose data reads as a large number leaves the floor alone;
    deleting a counter raises it to the counter's value."""
    _define(client, _public(size=8))
    client.nv_write(INDEX, b"\x00\x00\x00\x00\x00\x00\x01\x00")
    client.nv_undefine_space(INDEX)
    _define(client, _public(nt=TpmNt.COUNTER, size=8))
    client.nv_increment(INDEX)
    assert client.nv_read(INDEX, 8) == (1).to_bytes(8, "big")
    client.nv_increment(INDEX)
    client.nv_undefine_space(INDEX)
    _define(client, _public(nt=TpmNt.COUNTER, size=8))
    client.nv_increment(INDEX)
    assert client.nv_read(INDEX, 8) == (3).to_bytes(8, "big")


def test_a_counter_counts_from_the_floor_and_wraps_at_64_bits(tpm: Tpm,
                                                               client: TpmClient) -> None:
    tpm.state.nv_counter_floor = 1000
    _define(client, _public(nt=TpmNt.COUNTER, size=8))
    client.nv_increment(INDEX)
    assert client.nv_read(INDEX, 8) == (1001).to_bytes(8, "big")
    tpm.state.nv[INDEX] = replace(tpm.state.nv[INDEX], data=b"\xff" * 8)
    client.nv_increment(INDEX)
    assert client.nv_read(INDEX, 8) == bytes(8)


# ---- which authorization reads and writes -----------------------------------------------------
def test_the_platform_reads_and_writes_with_ppread_and_ppwrite(client: TpmClient) -> None:
    _define(client, _public(RW | TpmaNv.PPREAD | TpmaNv.PPWRITE))
    client.nv_write(INDEX, b"pp", auth_handle=TpmRh.PLATFORM)
    assert client.nv_read(INDEX, 2, auth_handle=TpmRh.PLATFORM) == b"pp"
    client.nv_undefine_space(INDEX)
    _define(client, _public(RW))
    refused = TpmRc.NV_AUTHORIZATION
    assert _code(lambda: client.nv_write(INDEX, b"pp", auth_handle=TpmRh.PLATFORM)) == refused


def test_another_hierarchy_never_reads_or_writes(client: TpmClient) -> None:
    every = (RW | TpmaNv.PPREAD | TpmaNv.PPWRITE | TpmaNv.OWNERREAD | TpmaNv.OWNERWRITE
             | TpmaNv.POLICYREAD | TpmaNv.POLICYWRITE)
    _define(client, _public(every))
    refused = TpmRc.NV_AUTHORIZATION
    assert _code(lambda: client.nv_write(INDEX, b"x", auth_handle=TpmRh.ENDORSEMENT)) == refused
    client.nv_write(INDEX, b"x")
    assert _code(lambda: client.nv_read(INDEX, 1, auth_handle=TpmRh.ENDORSEMENT)) == refused


def test_a_policy_session_on_the_index_needs_policyread(client: TpmClient) -> None:
    """With a policy session the index's own authorization is POLICYREAD / POLICYWRITE,
    whatever AUTHREAD / AUTHWRITE say."""
    _define(client, _public(RW, policy=bytes(32)))
    client.nv_write(INDEX, b"data")
    session = client.start_auth_session(TpmSe.POLICY)
    refused = _code(lambda: client.nv_read(INDEX, 4, auth=Auth(session=session)))
    assert refused == TpmRc.NV_AUTHORIZATION
    client.nv_undefine_space(INDEX)
    _define(client, _public(RW | TpmaNv.POLICYREAD, policy=bytes(32)))
    client.nv_write(INDEX, b"data")
    session = client.start_auth_session(TpmSe.POLICY)
    assert client.nv_read(INDEX, 4, auth=Auth(session=session)) == b"data"


@pytest.mark.parametrize("nt", [TpmNt.COUNTER, TpmNt.EXTEND])
def test_increment_and_extend_need_a_write_authorization(client: TpmClient, nt: TpmNt) -> None:
    size = 8 if nt == TpmNt.COUNTER else 32
    _define(client, _public(TpmaNv.AUTHREAD | TpmaNv.OWNERWRITE | TpmaNv.NO_DA, nt=nt,
                            size=size))
    change = client.nv_increment if nt == TpmNt.COUNTER else (
        lambda index: client.nv_extend(index, b"event"))
    assert _code(lambda: change(INDEX)) == TpmRc.NV_AUTHORIZATION
    if nt == TpmNt.COUNTER:
        client.nv_increment(INDEX, auth_handle=TpmRh.OWNER)
    else:
        client.nv_extend(INDEX, b"event", auth_handle=TpmRh.OWNER)
    assert client.nv_read(INDEX, size)


def test_a_handle_that_is_no_index_is_refused_on_its_position(client: TpmClient) -> None:
    """A PCR handle passes the engine's handle check; the NV commands refuse it as the NV
    handle they expected (TPM_RC_HANDLE, with that handle's number)."""
    assert _code(lambda: client.call(TpmCc.NV_READ_PUBLIC, (7,))) == for_handle(TpmRc.HANDLE, 1)
    params = writer().u16(1).u16(0).to_bytes()
    assert _code(lambda: client.call(TpmCc.NV_READ, (TpmRh.OWNER, 7), params, (Auth(),))) == (
        for_handle(TpmRc.HANDLE, 2))


# ---- locks, kinds, ranges ---------------------------------------------------------------------
def test_a_write_locked_index_refuses_writes_and_increments(tpm: Tpm, client: TpmClient) -> None:
    _define(client, _public(size=8))
    _set_attribute(tpm, TpmaNv.WRITELOCKED)
    assert _code(lambda: client.nv_write(INDEX, b"x")) == TpmRc.NV_LOCKED
    _define(client, _public(nt=TpmNt.COUNTER, size=8, index=INDEX + 1))
    _set_attribute(tpm, TpmaNv.WRITELOCKED, INDEX + 1)
    assert _code(lambda: client.nv_increment(INDEX + 1)) == TpmRc.NV_LOCKED


def test_a_read_locked_index_refuses_reads(tpm: Tpm, client: TpmClient) -> None:
    _define(client, _public(size=8))
    client.nv_write(INDEX, b"x")
    _set_attribute(tpm, TpmaNv.READLOCKED)
    assert _code(lambda: client.nv_read(INDEX, 1)) == TpmRc.NV_LOCKED


def test_each_kind_of_index_takes_only_its_own_command(client: TpmClient) -> None:
    _define(client, _public(size=8))
    assert _code(lambda: client.nv_increment(INDEX)) == for_handle(TpmRc.ATTRIBUTES, 2)
    assert _code(lambda: client.nv_extend(INDEX, b"e")) == for_handle(TpmRc.ATTRIBUTES, 2)


def test_writes_reach_the_last_byte_and_not_beyond(client: TpmClient) -> None:
    _define(client, _public(size=16))
    client.nv_write(INDEX, b"0123456789abcdef")
    client.nv_write(INDEX, b"XY", 6)
    assert client.nv_read(INDEX, 16) == b"012345XY89abcdef"
    client.nv_write(INDEX, b"end", 13)
    assert client.nv_read(INDEX, 16) == b"012345XY89abcend"
    assert _code(lambda: client.nv_write(INDEX, b"end!", 13)) == TpmRc.NV_RANGE
    assert client.nv_read(INDEX, 6, 10) == b"abcend"
    assert _code(lambda: client.nv_read(INDEX, 10, 10)) == TpmRc.NV_RANGE


def test_a_writeall_index_is_written_whole(client: TpmClient) -> None:
    _define(client, _public(RW | TpmaNv.WRITEALL, size=4))
    assert _code(lambda: client.nv_write(INDEX, b"abc")) == TpmRc.NV_RANGE
    client.nv_write(INDEX, b"abcd")
    assert client.nv_read(INDEX, 4) == b"abcd"


def test_write_and_extend_data_is_at_most_1024_bytes(client: TpmClient) -> None:
    _define(client, _public(size=MAX_NV_INDEX_SIZE))
    client.nv_write(INDEX, b"w" * 1024)
    assert _code(lambda: client.nv_write(INDEX, b"w" * 1025)) == PARSE_ERROR
    _define(client, _public(nt=TpmNt.EXTEND, size=32, index=INDEX + 1))
    client.nv_extend(INDEX + 1, b"e" * 1024)
    assert _code(lambda: client.nv_extend(INDEX + 1, b"e" * 1025)) == PARSE_ERROR
