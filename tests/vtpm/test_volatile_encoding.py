"""The volatile state's encoding: PCR banks as one digest size and the values back to back,
the first encoding (each PCR a TPM2B) still read, and malformed banks refused by name."""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.crypto.drbg import SeededRandom
from cvm.errors import CvmError, FormatError
from cvm.formats.tpm2.constants import TpmAlg, TpmRh, TpmSe
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import KeyedHashParms, Public
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm import volatile
from cvm.vtpm.engine import Tpm
from cvm.vtpm.pcr import PcrBanks
from cvm.vtpm.templates import srk_template
from cvm.vtpm.volatile import (
    LEGACY_MAGIC,
    VOLATILE_MAGIC,
    VolatileState,
    _IrregularError,
    _unpack,
)

SHA1, SHA256 = int(TpmAlg.SHA1), int(TpmAlg.SHA256)
TAIL = bytes(4) + bytes(4) + bytes(8) + bytes(4)  # no objects, no sessions, counter 0, none saved


def _state() -> VolatileState:
    pcrs = PcrBanks({SHA1: [bytes([i]) * 20 for i in range(3)],
                     SHA256: [bytes([0x80 + i]) * 32 for i in range(2)]}, update_counter=7)
    return VolatileState(True, b"seed", b"proof", pcrs, {}, {})


def _head(magic: bytes) -> bytes:
    return (magic + b"\x01" + b"\x00\x04seed" + b"\x00\x05proof" + (7).to_bytes(4, "big")
            + (2).to_bytes(4, "big"))


def test_banks_are_a_size_and_the_values_back_to_back() -> None:
    expected = (_head(VOLATILE_MAGIC)
                + SHA1.to_bytes(2, "big") + (3).to_bytes(4, "big") + (20).to_bytes(2, "big")
                + b"".join(bytes([i]) * 20 for i in range(3))
                + SHA256.to_bytes(2, "big") + (2).to_bytes(4, "big") + (32).to_bytes(2, "big")
                + b"".join(bytes([0x80 + i]) * 32 for i in range(2)) + TAIL)
    assert _state().to_bytes() == expected
    restored = VolatileState.from_bytes(expected)
    assert restored.pcrs == _state().pcrs
    assert (restored.started, restored.null_seed, restored.null_proof) == (True, b"seed", b"proof")


def test_the_first_encoding_is_still_read() -> None:
    def bank(alg: int, values: list[bytes]) -> bytes:
        return (alg.to_bytes(2, "big") + len(values).to_bytes(4, "big")
                + b"".join(len(v).to_bytes(2, "big") + v for v in values))
    state = _state()
    legacy = (_head(LEGACY_MAGIC) + bank(SHA1, state.pcrs.values[SHA1])
              + bank(SHA256, state.pcrs.values[SHA256]) + TAIL)
    restored = VolatileState.from_bytes(legacy)
    assert restored.pcrs == state.pcrs
    assert restored.to_bytes() == state.to_bytes()  # written back in the current encoding


def test_an_empty_bank_round_trips() -> None:
    state = VolatileState(False, b"", b"", PcrBanks({SHA256: []}), {}, {})
    assert VolatileState.from_bytes(state.to_bytes()).pcrs.values == {SHA256: []}


@pytest.mark.parametrize(("values", "why"), [
    ([bytes(20), bytes(32)], "mixed sizes"), ([bytes(65)], "a digest above 64 bytes"),
    ([b"", b""], "empty digests"),
])
def test_a_bank_that_cannot_be_one_size_is_refused(values: list[bytes], why: str) -> None:
    state = VolatileState(False, b"", b"", PcrBanks({SHA1: values}), {}, {})
    with pytest.raises(FormatError, match=r"^vTPM volatile state: PCR bank 0x4 is not "
                                          r"values of one size of 1 to 64 bytes$"):
        state.to_bytes()


def test_a_64_byte_bank_is_the_largest() -> None:
    state = VolatileState(False, b"", b"", PcrBanks({SHA1: [bytes(64)]}), {}, {})
    assert VolatileState.from_bytes(state.to_bytes()).pcrs.values == {SHA1: [bytes(64)]}


@pytest.mark.parametrize("size", [65, 0])
def test_a_bank_size_outside_1_to_64_is_refused(size: int) -> None:
    good = _state().to_bytes()
    size_at = len(_head(VOLATILE_MAGIC)) + 2 + 4
    bad = good[:size_at] + size.to_bytes(2, "big") + good[size_at + 2:]
    with pytest.raises(FormatError, match=rf"^vTPM volatile state: 3 PCRs of {size} bytes: a "
                                          r"PCR holds 1 to 64 \(at offset 0x26\)$"):
        VolatileState.from_bytes(bad)


def test_values_cut_short_or_a_bad_magic_are_refused() -> None:
    good = _state().to_bytes()
    size_at = len(_head(VOLATILE_MAGIC)) + 2 + 4
    shorter = good[:size_at - 4] + (1000).to_bytes(4, "big") + good[size_at:]
    with pytest.raises(FormatError, match=r"^vTPM volatile state: PCR values needs 20000 bytes "
                                          r"at offset 0x26, only \d+ left$"):
        VolatileState.from_bytes(shorter)
    with pytest.raises(FormatError, match="bad magic"):
        VolatileState.from_bytes(b"CVMTPMV3" + good[8:])


def _rich_state() -> VolatileState:
    """A started TPM's volatile state with loaded objects, HMAC and policy sessions (one
    bound, one with a policy under way) and a saved session."""
    tpm = Tpm(random=SeededRandom(b"volatile"))
    client = TpmClient(tpm.execute, random=SeededRandom(b"client"))
    client.startup()
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    client.load_external(Public.from_tpm2b(client.read_public(srk)[0].to_tpm2b()))
    client.start_auth_session(TpmSe.HMAC, bind=srk, symmetric_bits=128)
    policy = client.start_auth_session(TpmSe.POLICY)
    client.policy_pcr(policy, PcrSelectionList.of("sha256", [7]))
    client.policy_command_code(policy, 0x15E)
    client.policy_password(policy)
    state = tpm.volatile()
    session = dataclasses.replace(next(iter(state.sessions.values())), handle=0x02FF0001,
                                  auth_value_needed=True)
    state.saved_sessions[session.handle] = (session, 5)
    state.context_counter = 9
    return state


@functools.cache
def _rich_encoding() -> bytes:
    """The rich state as the field-by-field writer writes it (made once)."""
    return _rich_state()._to_bytes_checked()


def _outcome(parse: Callable[[bytes], VolatileState], data: bytes) -> object:
    try:
        return parse(data)
    except FormatError as error:
        return str(error)


def test_the_struct_runs_write_and_read_what_the_fields_do() -> None:
    rich = _rich_state()
    data = rich._pack()  # the struct runs themselves, not their fallback
    assert data == rich._to_bytes_checked() == rich.to_bytes()
    assert len(rich.objects) == 2 and len(rich.sessions) == 2 and rich.saved_sessions
    assert VolatileState.from_bytes(data) == VolatileState._from_bytes_checked(data) == rich
    assert _unpack(data) == rich  # the fast reader takes it itself


def test_fields_at_their_maximum_are_taken_by_the_fast_reader() -> None:
    """64-byte nonces, key and policy digest, 66-byte bind and qualified names; bound and
    unbound sessions; an empty bank."""
    state = _rich_state()
    session = next(iter(state.sessions.values()))
    session.nonce_tpm, session.nonce_caller, session.session_key = (bytes([1]) * 64,
                                                                   bytes([2]) * 64,
                                                                   bytes([3]) * 64)
    session.policy = dataclasses.replace(session.policy, value=bytes([4]) * 64)
    session.bind_name = bytes([5]) * 66
    next(iter(state.objects.values())).qualified_name = bytes([6]) * 66
    state.pcrs.values[0x0012] = []
    state.pcrs.values[0x0013] = [b"\x01", b"\x02"]  # one-byte values: the smallest size
    data = state._pack()
    assert data == state._to_bytes_checked()
    assert _unpack(data) == state == VolatileState._from_bytes_checked(data)


@given(st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 0xFF)), max_size=3),
       st.integers(0, 1 << 16), st.binary(max_size=3))
def test_the_fast_reader_agrees_with_the_field_by_field_reader(
        edits: list[tuple[int, int]], cut: int, extra: bytes) -> None:
    """Changed, cut or lengthened encodings: the same state, or the same refusal."""
    rich = _rich_encoding()
    data = bytearray(rich)
    for position, value in edits:
        data[position % len(rich)] = value
    for candidate in (bytes(data), rich[: cut % (len(rich) + 1)], rich + extra):
        assert (_outcome(VolatileState.from_bytes, candidate)
                == _outcome(VolatileState._from_bytes_checked, candidate))


@pytest.mark.parametrize("change", [
    lambda s: setattr(s, "context_counter", 1 << 64),
    lambda s: setattr(s.pcrs, "update_counter", -1),
    lambda s: setattr(s, "null_seed", bytes(0x10000)),
    lambda s: setattr(next(iter(s.sessions.values())), "symmetric_bits", 1 << 16),
    lambda s: setattr(next(iter(s.sessions.values())), "pcr_counter", 1 << 32),
    lambda s: s.pcrs.values.__setitem__(0x10000, [bytes(32)]),
    lambda s: s.pcrs.values.__setitem__(0x000B, [bytes(32), bytes(20)]),
])
def test_a_value_that_does_not_fit_is_refused_as_the_checking_writer_refuses_it(
        change: Callable[[VolatileState], None]) -> None:
    state = _rich_state()
    change(state)
    with pytest.raises(CvmError) as fast:
        state.to_bytes()
    with pytest.raises(CvmError) as checked:
        state._to_bytes_checked()
    assert (type(fast.value), str(fast.value)) == (type(checked.value), str(checked.value))


class _EmptyPublic:
    """A public area that marshals as an empty TPM2B_PUBLIC (which no reader accepts)."""

    def to_tpm2b(self) -> bytes:
        return bytes(2)


def _oversized(change: str) -> bytes:
    state = _rich_state()
    session = next(iter(state.sessions.values()))
    item = next(iter(state.objects.values()))
    if change == "nonce":
        session.nonce_caller = bytes(65)
    elif change == "nonce tpm":
        session.nonce_tpm = bytes(65)
    elif change == "policy":
        session.policy = dataclasses.replace(session.policy, value=bytes(65))
    elif change == "key":
        session.session_key = bytes(65)
    elif change == "bind name":
        session.bind_name = bytes(67)
    elif change == "qualified name":
        item.qualified_name = bytes(67)
    elif change == "empty public":
        item.public = _EmptyPublic()  # type: ignore[assignment]
    elif change == "bound flag 2":
        saved, _ = next(iter(state.saved_sessions.values()))
        saved.bind_name = None
        data = bytearray(state._to_bytes_checked())
        data[-14] = 2  # the saved session's "bound" byte, before bindName.size and the tail
        return bytes(data)
    return state._to_bytes_checked()


@pytest.mark.parametrize("change", ["nonce", "nonce tpm", "key", "policy", "bind name",
                                    "qualified name", "empty public", "bound flag 2"])
def test_what_the_field_reader_refuses_or_reads_the_fast_reader_does_too(change: str) -> None:
    data = _oversized(change)
    expected = _outcome(VolatileState._from_bytes_checked, data)
    assert _outcome(VolatileState.from_bytes, data) == expected
    assert isinstance(expected, str) == (change != "bound flag 2")
    if change == "bound flag 2":
        assert _unpack(data) == expected  # read by the fast reader: no bind name
    else:
        with pytest.raises((_IrregularError, struct.error)):
            _unpack(data)  # left to the field-by-field reader


def test_every_cut_of_the_encoding_is_refused_as_the_field_reader_refuses_it() -> None:
    data = _rich_encoding()
    for cut in range(len(data)):
        assert (_outcome(VolatileState.from_bytes, data[:cut])
                == _outcome(VolatileState._from_bytes_checked, data[:cut]))


# ---- the public-area memo ---------------------------------------------------------------------
def _keyed_hash(unique: bytes) -> bytes:
    return Public(TpmAlg.KEYEDHASH, TpmAlg.SHA256, 0x12, b"", KeyedHashParms(), unique).to_bytes()


def test_a_public_area_read_again_is_the_one_parsed_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(volatile, "_PUBLICS", {})
    rich = _rich_encoding()
    first, second = _unpack(rich), _unpack(rich)
    assert first == second == VolatileState._from_bytes_checked(rich)
    for handle, item in first.objects.items():
        assert second.objects[handle].public is item.public  # parsed once
        assert volatile._PUBLICS[item.public.to_bytes()] is item.public
        if item.sensitive is not None:
            assert second.objects[handle].sensitive is not item.sensitive  # parsed each time
    assert sum(item.sensitive is not None for item in first.objects.values()) == 1
    # the SRK and its public area loaded again: one public area, parsed once for both
    assert len(first.objects) == 2 and len(volatile._PUBLICS) == 1


def test_a_refused_public_area_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(volatile, "_PUBLICS", {})
    bad = b"\x00\x99" + _keyed_hash(b"x")[2:]
    for _ in range(2):
        with pytest.raises(FormatError, match=r"^TPMT_PUBLIC: object type 0x0099 is not "):
            volatile._public(bad)
    assert volatile._PUBLICS == {}


def test_the_memo_keeps_the_newest_public_areas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(volatile, "_PUBLICS", {})
    encodings = [_keyed_hash(i.to_bytes(2, "big")) for i in range(volatile.PUBLIC_MEMO_SIZE + 3)]
    parsed = [volatile._public(data) for data in encodings]
    assert list(volatile._PUBLICS) == encodings[3:]  # the oldest three forgotten
    assert all(volatile._PUBLICS[data] is parsed[i + 3]
               for i, data in enumerate(encodings[3:]))
    again = volatile._public(encodings[0])  # parsed afresh, the oldest kept one forgotten
    assert again == parsed[0] and again is not parsed[0]
    assert list(volatile._PUBLICS) == [*encodings[4:], encodings[0]]
    assert volatile._public(encodings[-1]) is parsed[-1]
