"""The non-volatile state's fast reader: the same state as the field-by-field reader for every
input it takes, and every input it does not take left to that reader (which decides)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.tpm2.constants import TpmAlg, TpmRh
from cvm.formats.tpm2.nv_public import NvPublic
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm import state as state_module
from cvm.vtpm.engine import Tpm
from cvm.vtpm.state import NvIndex, PersistentState
from cvm.vtpm.templates import srk_template

_MAX_AUTH_SIZE = 64
HEAD = 12 + 6 * 34  # magic, version, three seeds and proofs of 32 bytes


def _state(auths: tuple[bytes, ...] = (b"", b"", b"", b"")) -> PersistentState:
    counter = iter(range(1, 1000))
    state = PersistentState.manufacture(lambda n: bytes([next(counter)]) * n)
    state.auths = dict(zip(state_module.HIERARCHIES, auths, strict=True))
    state.failed_tries, state.max_tries, state.recovery_time = 1, 2, 3
    state.lockout_recovery, state.reset_count, state.restart_count = 4, 5, 6
    state.clock_ms, state.nv_counter_floor = 7 << 40, 8 << 40
    state.self_heal_ms, state.lockout_timer_ms = 9 << 40, 10 << 40
    state.orderly_state, state.lockout_auth_enabled, state.da_used = True, False, True
    return state


def _both(data: bytes) -> tuple[PersistentState | None, PersistentState]:
    return state_module._unpack(data), PersistentState._from_bytes_checked(data)


@pytest.mark.parametrize("auths", [(b"", b"", b"", b""), (b"p", b"o" * 32, b"e" * 64, b"l"),
                                   (b"\x00" * 64,) * 4])
def test_the_fast_reader_gives_the_checked_readers_state(auths: tuple[bytes, ...]) -> None:
    state = _state(auths)
    data = state.to_bytes()
    fast, checked = _both(data)
    assert fast == checked == state
    assert PersistentState.from_bytes(data) == state
    assert [type(v) for v in (fast.orderly_state, fast.lockout_auth_enabled, fast.da_used)] \
        == [bool] * 3  # type: ignore[union-attr]
    assert list(fast.seeds) == list(checked.seeds)  # type: ignore[union-attr]
    assert list(fast.auths) == list(checked.auths)  # type: ignore[union-attr]


def test_flags_cleared_and_zero_counters_read_alike() -> None:
    state = PersistentState.manufacture(bytes)
    fast, checked = _both(state.to_bytes())
    assert fast == checked == state


def _irregular() -> dict[str, bytes]:
    data = _state((b"p", b"", b"", b"")).to_bytes()
    short_seed = PersistentState({h: b"s" * 31 for h in state_module.HIERARCHIES[:3]},
                                 {h: b"p" * 32 for h in state_module.HIERARCHIES[:3]})
    short_proof = PersistentState({h: b"s" * 32 for h in state_module.HIERARCHIES[:3]},
                                  {h: b"p" * 32 if h != TpmRh.ENDORSEMENT else b"p"
                                   for h in state_module.HIERARCHIES[:3]})
    saved = _state()
    saved.saved_pcrs = {TpmAlg.SHA256: [bytes(32)] * 16}
    with_nv = _state()
    with_nv.nv = {0x01500002: NvIndex(NvPublic(0x01500002, TpmAlg.SHA256, 0x00060006, b"", 8),
                                      b"a", b"d" * 8)}
    run = len(data) - 12 - 59  # the counters, timers and flags; three empty counts after

    def flag(offset: int) -> bytes:
        return data[:run + offset] + b"\x02" + data[run + offset + 1:]
    return {
        "a seed of 31 bytes": short_seed.to_bytes(),
        "a proof of 1 byte": short_proof.to_bytes(),
        "saved PCRs": saved.to_bytes(),
        "an NV index": with_nv.to_bytes(),
        "a flag of 2 (orderly)": flag(40),
        "a flag of 2 (lockoutAuthEnabled)": flag(57),
        "a flag of 2 (daUsed)": flag(58),
        "a trailing byte": data + b"\x00",
        "one byte short": data[:-1],
        "only the head": data[:HEAD],
        "short of the head": data[:HEAD - 1],
        "a bad magic": b"X" + data[1:],
        "another version": data[:11] + b"\x03" + data[12:],
        "an auth of 65 bytes": data[:HEAD] + b"\x00\x41" + bytes(65) + data[HEAD + 3:],
        "an auth past the end": data[:HEAD] + b"\xff\xff" + data[HEAD + 2:],
        "a count of saved PCR banks": data[:-12] + b"\x00\x00\x00\x01" + data[-8:],
        "a count of persistent objects": data[:-4] + b"\x00\x00\x00\x01",
    }


@pytest.mark.parametrize("name", list(_irregular()))
def test_what_the_fast_reader_does_not_take_the_checked_reader_decides(name: str) -> None:
    data = _irregular()[name]
    assert state_module._unpack(data) is None
    try:
        checked = PersistentState._from_bytes_checked(data)
    except FormatError as error:
        with pytest.raises(FormatError) as refused:
            PersistentState.from_bytes(data)
        assert str(refused.value) == str(error)
    else:
        assert PersistentState.from_bytes(data) == checked


def test_a_seed_over_its_size_is_refused() -> None:
    state = PersistentState({h: b"s" * 33 for h in state_module.HIERARCHIES[:3]},
                            {h: b"p" * 32 for h in state_module.HIERARCHIES[:3]})
    with pytest.raises(FormatError, match=r"vTPM state: seed\.size 33 exceeds the maximum 32"):
        PersistentState.from_bytes(state.to_bytes())


def test_a_persistent_object_comes_back_whole(client: TpmClient, tpm: Tpm) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    client.evict_control(srk, 0x81000001)
    data = tpm.state.to_bytes()
    assert state_module._unpack(data) is None  # left to the field reader
    again = PersistentState.from_bytes(data)
    assert again == tpm.state
    kept = again.persistent[0x81000001]
    assert kept.hierarchy == TpmRh.OWNER and kept.sensitive is not None
    assert kept.qualified_name == tpm.state.persistent[0x81000001].qualified_name != b""


_AUTH = st.one_of(st.just(b""), st.binary(max_size=_MAX_AUTH_SIZE),
                  st.integers(1, _MAX_AUTH_SIZE).map(bytes))
_U32, _U64 = st.integers(0, 0xFFFF_FFFF), st.integers(0, (1 << 64) - 1)


@given(st.tuples(_AUTH, _AUTH, _AUTH, _AUTH), st.lists(_U32, min_size=6, max_size=6),
       st.lists(_U64, min_size=4, max_size=4), st.lists(st.booleans(), min_size=3, max_size=3))
def test_the_fast_reader_reads_every_usual_state_as_the_checked_reader(
        auths: tuple[bytes, ...], u32s: list[int], u64s: list[int], flags: list[bool]) -> None:
    """Random authValues (none, zeros, any bytes up to 64), counters, timers and flags: the
    fast reader takes each, and reads what the field-by-field reader reads."""
    state = _state(auths)
    (state.failed_tries, state.max_tries, state.recovery_time, state.lockout_recovery,
     state.reset_count, state.restart_count) = u32s
    state.clock_ms, state.nv_counter_floor, state.self_heal_ms, state.lockout_timer_ms = u64s
    state.orderly_state, state.lockout_auth_enabled, state.da_used = flags
    fast, checked = _both(state.to_bytes())
    assert fast == checked == state
    assert list(fast.auths) == list(checked.auths)  # type: ignore[union-attr]


@given(st.tuples(_AUTH, _AUTH, _AUTH, _AUTH), st.integers(0, 400), st.binary(max_size=3))
def test_the_fast_reader_takes_a_damaged_state_only_as_the_checked_reader_reads_it(
        auths: tuple[bytes, ...], cut: int, tail: bytes) -> None:
    """A state cut short or with bytes after it: the fast reader leaves it (None) or reads
    exactly what the checked reader reads."""
    data = _state(auths).to_bytes()
    damaged = data[:cut] + tail if cut < len(data) else data + tail
    fast = state_module._unpack(damaged)
    if fast is not None:
        assert fast == PersistentState._from_bytes_checked(damaged)
    else:
        assert damaged != data


@pytest.mark.parametrize("damage", ["short", "long", "count", "flag"])
def test_a_state_without_authvalues_is_read_strictly_too(damage: str) -> None:
    """The usual state (four empty authValues, read in one comparison): cut short, with a byte
    more, with an NV count or with a flag of 2, it is left to the checked reader."""
    data = _state().to_bytes()
    damaged = {"short": data[:-1], "long": data + b"\x00",
               "count": data[:-8] + b"\x00\x00\x00\x01" + data[-4:],
               "flag": data[:-14] + b"\x02" + data[-13:]}[damage]
    assert state_module._unpack(damaged) is None
    assert state_module._unpack(data) == _state()
