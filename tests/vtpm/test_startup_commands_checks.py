"""Startup, Shutdown, SelfTest, GetRandom, HierarchyChangeAuth and the dictionary-attack
commands, check by check (Part 3 9.3, 9.4, 10.2, 16.1, 24.8, 25.2, 25.3): the counters a TPM
Reset, Restart and Resume move, what Startup does to the lockout, each refusal's code."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmCc, TpmRh
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.tpm2b import tpm2b, writer
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm

from .conftest import FakeClock, seeded_random


def _code(action: Callable[[], object]) -> int:
    with pytest.raises(StatusError) as refused:
        action()
    return refused.value.code


def _power_cycle(tpm: Tpm, clock: FakeClock) -> tuple[Tpm, TpmClient]:
    """The same non-volatile state in a TPM just powered on (not started)."""
    again = Tpm(state=tpm.state, random=seeded_random(b"again"), clock=clock)
    return again, TpmClient(again.execute, random=seeded_random(b"client"))


def test_reset_restart_and_resume_move_their_counters(tpm: Tpm, client: TpmClient,
                                                      clock: FakeClock) -> None:
    state = tpm.state
    assert (state.reset_count, state.restart_count) == (1, 0)  # no Shutdown: a TPM Reset
    state.restart_count = 5
    client.shutdown(clear=True)
    again, other = _power_cycle(tpm, clock)
    other.startup(clear=True)  # Shutdown(CLEAR), Startup(CLEAR): a TPM Reset
    assert (state.reset_count, state.restart_count) == (2, 0)
    state.restart_count = 5
    other.shutdown(clear=False)
    assert state.orderly_state and set(state.saved_pcrs)
    again, other = _power_cycle(again, clock)
    other.startup(clear=True)  # Shutdown(STATE), Startup(CLEAR): a TPM Restart
    assert (state.reset_count, state.restart_count) == (2, 6)
    assert not state.orderly_state and state.saved_pcrs == {}
    other.shutdown(clear=False)
    again, other = _power_cycle(again, clock)
    other.startup(clear=False)  # Shutdown(STATE), Startup(STATE): a TPM Resume
    assert (state.reset_count, state.restart_count) == (2, 7)
    assert not state.orderly_state and state.saved_pcrs == {}
    assert again.started and len(again.null_seed) == 32 and len(again.null_proof) == 32
    assert again.null_seed not in (tpm.null_seed, again.null_proof)


def test_startup_refusals(tpm: Tpm, client: TpmClient, clock: FakeClock) -> None:
    client.shutdown(clear=True)
    again, other = _power_cycle(tpm, clock)
    assert _code(lambda: other.startup(clear=False)) == for_parameter(TpmRc.VALUE, 1)
    assert _code(lambda: other.call(TpmCc.STARTUP, params=writer().u16(2).to_bytes())) == (
        for_parameter(TpmRc.VALUE, 1))
    assert not again.started
    other.startup(clear=True)
    assert _code(lambda: client.call(TpmCc.SHUTDOWN, params=writer().u16(2).to_bytes())) == (
        for_parameter(TpmRc.VALUE, 1))


@pytest.mark.parametrize("lockout_recovery", [0, 1000])
def test_startup_gives_lockout_back_only_without_a_recovery_time(
        tpm: Tpm, client: TpmClient, clock: FakeClock, lockout_recovery: int) -> None:
    tpm.state.lockout_recovery, tpm.state.lockout_auth_enabled = lockout_recovery, False
    _, other = _power_cycle(tpm, clock)
    other.startup()
    assert tpm.state.lockout_auth_enabled == (lockout_recovery == 0)


@pytest.mark.parametrize(("recovery", "failed", "counted"),
                         [(1000, 0, 1), (1000, 2, 3), (1000, 3, 3), (0, 0, 0)])
def test_a_da_use_without_orderly_shutdown_counts_as_a_failure(
        tpm: Tpm, client: TpmClient, clock: FakeClock, recovery: int, failed: int,
        counted: int) -> None:
    state = tpm.state
    state.recovery_time, state.failed_tries, state.da_used = recovery, failed, True
    clock.now += 5
    again, other = _power_cycle(tpm, clock)
    other.startup()
    assert (state.failed_tries, state.da_used) == (counted, False)
    assert state.self_heal_ms == (again.now_ms() if counted > failed else 0)


def test_an_orderly_shutdown_clears_da_used_and_saves_the_clock(
        tpm: Tpm, client: TpmClient, clock: FakeClock) -> None:
    tpm.state.da_used = True
    clock.now += 2.5
    client.shutdown(clear=True)
    assert (tpm.state.da_used, tpm.state.clock_ms, tpm.state.saved_pcrs) == (False, 2500, {})


def test_self_test_and_get_random(client: TpmClient) -> None:
    for full in (0, 1):
        client.call(TpmCc.SELF_TEST, params=bytes([full]))
    assert _code(lambda: client.call(TpmCc.SELF_TEST, params=b"\x02")) == (
        for_parameter(TpmRc.VALUE, 1))
    assert [len(client.get_random(n)) for n in (0, 1, 64, 65)] == [0, 1, 64, 64]


def _change_auth(client: TpmClient, handle: int, value: bytes, auth: bytes = b"") -> None:
    client.call(TpmCc.HIERARCHY_CHANGE_AUTH, (handle,), tpm2b(value), (Auth(auth),))


def test_hierarchy_change_auth(tpm: Tpm, client: TpmClient) -> None:
    for handle in (TpmRh.OWNER, TpmRh.ENDORSEMENT, TpmRh.PLATFORM, TpmRh.LOCKOUT):
        _change_auth(client, handle, bytes(range(1, 33)) + b"\x00\x00")  # zeros dropped
        assert tpm.state.auths[handle] == bytes(range(1, 33))
        assert _code(lambda h=handle: _change_auth(client, h, b"\x01" * 33, bytes(
            range(1, 33)))) == for_parameter(TpmRc.SIZE, 1)
        _change_auth(client, handle, b"", bytes(range(1, 33)))
        assert tpm.state.auths[handle] == b""
    assert _code(lambda: _change_auth(client, TpmRh.NULL, b"x")) == for_handle(
        TpmRc.HIERARCHY, 1)
    # a TPM2B_AUTH holds at most 64 bytes (a TPMU_HA), even when its tail is zeros
    assert _code(lambda: _change_auth(client, TpmRh.OWNER, b"\x01" * 32 + bytes(33))) == (
        for_parameter(TpmRc.SIZE, 1))
    assert tpm.state.auths[TpmRh.OWNER] == b""


@pytest.mark.parametrize(("code", "handles", "words"), [
    (TpmCc.GET_CAPABILITY, (), 3), (TpmCc.DICTIONARY_ATTACK_PARAMETERS, (TpmRh.LOCKOUT,), 3)])
def test_a_parameter_cut_short_is_named_by_its_number(client: TpmClient, code: int,
                                                      handles: tuple[int, ...],
                                                      words: int) -> None:
    auths = (Auth(),) if handles else ()
    for present in range(words):
        body = bytes(4 * present + 2)  # the next u32 has only two of its bytes
        assert _code(lambda b=body: client.call(code, handles, b, auths)) == for_parameter(
            TpmRc.INSUFFICIENT, present + 1)


def test_dictionary_attack_commands_take_only_lockout(tpm: Tpm, client: TpmClient) -> None:
    parameters = writer().u32(7).u32(8).u32(9).to_bytes()
    for code, params in ((TpmCc.DICTIONARY_ATTACK_LOCK_RESET, b""),
                         (TpmCc.DICTIONARY_ATTACK_PARAMETERS, parameters)):
        assert _code(lambda c=code, p=params: client.call(c, (TpmRh.OWNER,), p, (Auth(),))) == (
            for_handle(TpmRc.HIERARCHY, 1))
    tpm.state.failed_tries = 2
    client.call(TpmCc.DICTIONARY_ATTACK_PARAMETERS, (TpmRh.LOCKOUT,), parameters, (Auth(),))
    state = tpm.state
    assert (state.max_tries, state.recovery_time, state.lockout_recovery) == (7, 8, 9)
    assert state.failed_tries == 2
    client.call(TpmCc.DICTIONARY_ATTACK_LOCK_RESET, (TpmRh.LOCKOUT,), b"", (Auth(),))
    assert state.failed_tries == 0
