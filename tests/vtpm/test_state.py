"""The vTPM state across power cycles: seeds, NV, persistent objects, orderly shutdown."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cvm.errors import FormatError, StatusError, UsageError
from cvm.formats.tpm2.constants import TpmAlg, TpmNt, TpmRh, TpmSe
from cvm.formats.tpm2.nv_public import NvPublic
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc, for_parameter
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.state import PersistentState
from cvm.vtpm.templates import ek_template, sealed_template, srk_template
from cvm.vtpm.volatile import VolatileState


def test_state_round_trip_keeps_identity(client: TpmClient, tpm: Tpm,
                                         make_tpm: Callable[..., Tpm]) -> None:
    _, ek = client.create_primary(TpmRh.ENDORSEMENT, ek_template("ecc"))
    client.nv_define_space(NvPublic(0x01500002, TpmAlg.SHA256, 0x00060006 | TpmNt.COUNTER << 4,
                                    b"", 8))
    client.nv_increment(0x01500002)
    data = tpm.state.to_bytes()
    assert PersistentState.from_bytes(data).to_bytes() == data
    reborn = make_tpm(PersistentState.from_bytes(data))
    other = TpmClient(reborn.execute)
    other.startup()
    assert other.create_primary(TpmRh.ENDORSEMENT, ek_template("ecc"))[1] == ek
    assert other.nv_read(0x01500002, 8) == (1).to_bytes(8, "big")
    stranger = TpmClient(make_tpm().execute)
    stranger.startup()
    assert stranger.create_primary(TpmRh.ENDORSEMENT, ek_template("ecc"))[1] != ek


def test_state_parser_is_strict(tpm: Tpm) -> None:
    data = tpm.state.to_bytes()
    for broken in (data[:-1], data + b"\x00", b"X" + data[1:]):
        with pytest.raises(FormatError):
            PersistentState.from_bytes(broken)


def test_startup_rules(tpm: Tpm) -> None:
    client = TpmClient(tpm.execute)
    with pytest.raises(StatusError) as refused:
        client.get_random(8)
    assert refused.value.code == TpmRc.INITIALIZE
    with pytest.raises(StatusError) as refused:
        client.startup(clear=False)
    assert refused.value.code == for_parameter(TpmRc.VALUE, 1)
    client.startup()
    with pytest.raises(StatusError) as refused:
        client.startup()
    assert refused.value.code == TpmRc.INITIALIZE


def test_resume_restores_saved_pcrs(client: TpmClient, tpm: Tpm,
                                    make_tpm: Callable[..., Tpm]) -> None:
    client.pcr_extend(7, {TpmAlg.SHA256: bytes(32)})
    client.pcr_extend(16, {TpmAlg.SHA256: bytes(32)})
    selection = PcrSelectionList.of("sha256", [7, 16])
    before = client.pcr_read(selection)[2]
    client.shutdown(clear=False)
    resumed = make_tpm(PersistentState.from_bytes(tpm.state.to_bytes()))
    other = TpmClient(resumed.execute)
    other.startup(clear=False)
    after = other.pcr_read(selection)[2]
    assert after[0] == before[0]
    assert after[1] == bytes(32)
    assert resumed.state.restart_count == 1


def test_volatile_state_round_trip(client: TpmClient, tpm: Tpm) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    policy = PolicyDigest.start().auth_value().value
    blob, public = client.create(srk, sealed_template(policy), data=b"kept", auth=b"pin")
    item = client.load(srk, blob, public)
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_auth_value(session)
    client.pcr_extend(9, {TpmAlg.SHA256: bytes(32)})
    data = tpm.volatile().to_bytes()
    restored = VolatileState.from_bytes(data)
    assert restored.to_bytes() == data
    tpm.restore_volatile(VolatileState.from_bytes(bytes(data)))
    assert client.unseal(item, Auth(b"pin", session)) == b"kept"
    with pytest.raises(FormatError):
        VolatileState.from_bytes(data[:-1])


COUNTER_FIELDS = ("failed_tries", "max_tries", "recovery_time", "lockout_recovery",
                  "reset_count", "restart_count", "clock_ms", "nv_counter_floor",
                  "self_heal_ms", "lockout_timer_ms")
FLAG_FIELDS = {"orderly_state": 40, "lockout_auth_enabled": 57, "da_used": 58}
FIXED_RUN = 59  # the counters, timers and flags, then three empty u32 counts


def _distinct_state() -> PersistentState:
    state = PersistentState.manufacture(lambda n: b"\x01" * n)
    for number, name in enumerate(COUNTER_FIELDS, start=1):
        setattr(state, name, number * 0x01010101 + (1 << 40 if name.endswith("_ms") else 0))
    state.orderly_state, state.lockout_auth_enabled, state.da_used = True, False, True
    return state


def test_every_counter_timer_and_flag_keeps_its_own_value() -> None:
    state = _distinct_state()
    again = PersistentState.from_bytes(state.to_bytes())
    assert again == state
    assert [getattr(again, name) for name in FLAG_FIELDS] == [True, False, True]


@pytest.mark.parametrize(("name", "offset"), FLAG_FIELDS.items())
def test_a_flag_byte_other_than_zero_or_one_is_refused(name: str, offset: int) -> None:
    data = bytearray(_distinct_state().to_bytes())
    data[len(data) - 12 - FIXED_RUN + offset] = 2
    with pytest.raises(FormatError, match="is 2, not a boolean"):
        PersistentState.from_bytes(bytes(data))


@pytest.mark.parametrize("name", ["failed_tries", "clock_ms", "lockout_timer_ms"])
def test_a_counter_out_of_range_is_refused_on_write(name: str) -> None:
    state = _distinct_state()
    setattr(state, name, -1)
    with pytest.raises(UsageError, match="out of range"):
        state.to_bytes()


def test_the_changed_guard_catches_a_command_that_forgets_to_say_so(
        client: TpmClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The vTPM tests' guard (conftest ``changed_is_complete``) fails a command that alters the
    non-volatile state without setting Tpm.changed, and lets one that sets it pass."""
    client.hierarchy_change_auth(TpmRh.OWNER, b"first")
    monkeypatch.setattr(Tpm, "mark_changed", lambda self: None)
    with pytest.raises(AssertionError, match=r"without setting Tpm\.changed"):
        client.hierarchy_change_auth(TpmRh.OWNER, b"second", Auth(b"first"))
    client.pcr_extend(7, {TpmAlg.SHA256: bytes(32)})  # no non-volatile change: passes
