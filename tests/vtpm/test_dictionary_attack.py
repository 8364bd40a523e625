"""Dictionary-attack protection as the reference TPM does it: which authValues count, how
failures heal with TPM time, lockoutAuth's own recovery, and what survives a restart."""

from __future__ import annotations

from typing import Any

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmRh
from cvm.formats.tpm2.response_code import TpmRc
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.state import PersistentState
from cvm.vtpm.templates import sealed_template, srk_template

from .conftest import FakeClock, seeded_random

SECRET = b"sealed under a PIN"
AUTH_FAIL, BAD_AUTH = 0x98E, 0x9A2


def _item(client: TpmClient, no_da: bool = False) -> int:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(no_da=True))
    blob, public = client.create(srk, sealed_template(no_da=no_da), data=SECRET, auth=b"pin")
    item = client.load(srk, blob, public)
    client.flush(srk)
    return item


def _code(action: Any) -> int:
    with pytest.raises(StatusError) as refused:
        action()
    return int(refused.value.code)


def _boot(state: PersistentState, clock: FakeClock) -> tuple[Tpm, TpmClient]:
    tpm = Tpm(PersistentState.from_bytes(state.to_bytes()), random=seeded_random(b"r"),
              clock=clock)
    client = TpmClient(tpm.execute, random=seeded_random(b"c"))
    client.startup()
    return tpm, client


def test_failures_heal_one_per_recovery_time_since_the_last(client: TpmClient, tpm: Tpm,
                                                            clock: FakeClock) -> None:
    item = _item(client)
    assert _code(lambda: client.unseal(item, Auth(b"bad"))) == AUTH_FAIL
    clock.now += 600
    assert _code(lambda: client.unseal(item, Auth(b"bad"))) == AUTH_FAIL
    clock.now += 600  # 1200 s after the first failure, 600 s after the last: nothing healed
    assert client.unseal(item, Auth(b"pin")) == SECRET
    assert tpm.state.failed_tries == 2
    clock.now += 400
    assert client.unseal(item, Auth(b"pin")) == SECRET
    assert tpm.state.failed_tries == 1
    clock.now += 5000
    assert client.unseal(item, Auth(b"pin")) == SECRET
    assert tpm.state.failed_tries == 0


def test_lockout_at_max_tries_and_no_da_objects(client: TpmClient, tpm: Tpm) -> None:
    item, exempt = _item(client), _item(client, no_da=True)
    for _ in range(3):
        assert _code(lambda: client.unseal(item, Auth(b"bad"))) == AUTH_FAIL
    assert _code(lambda: client.unseal(item, Auth(b"pin"))) == TpmRc.LOCKOUT
    assert client.unseal(exempt, Auth(b"pin")) == SECRET
    assert _code(lambda: client.unseal(exempt, Auth(b"bad"))) == BAD_AUTH
    assert tpm.state.failed_tries == 3


def test_hierarchies_are_exempt_but_lockout_auth_is_not(client: TpmClient, tpm: Tpm,
                                                        clock: FakeClock) -> None:
    client.hierarchy_change_auth(TpmRh.LOCKOUT, b"lockout pw")
    for hierarchy in (TpmRh.OWNER, TpmRh.ENDORSEMENT, TpmRh.PLATFORM):
        client.hierarchy_change_auth(hierarchy, b"pw")
        for _ in range(4):
            assert _code(lambda h=hierarchy: client.hierarchy_change_auth(h, b"x")) == BAD_AUTH
    assert tpm.state.failed_tries == 0
    reset = client.dictionary_attack_lock_reset
    assert _code(lambda: reset(Auth(b"guess"))) == AUTH_FAIL
    assert _code(lambda: reset(Auth(b"lockout pw"))) == TpmRc.LOCKOUT
    clock.now += 999
    assert _code(lambda: reset(Auth(b"lockout pw"))) == TpmRc.LOCKOUT
    clock.now += 1
    reset(Auth(b"lockout pw"))


def test_lockout_auth_without_recovery_needs_a_restart(client: TpmClient, tpm: Tpm,
                                                       clock: FakeClock) -> None:
    client.dictionary_attack_parameters(3, 1000, 0)
    assert _code(lambda: client.dictionary_attack_lock_reset(Auth(b"guess"))) == AUTH_FAIL
    clock.now += 100_000
    assert _code(client.dictionary_attack_lock_reset) == TpmRc.LOCKOUT
    client.shutdown()
    _, again = _boot(tpm.state, clock)
    again.dictionary_attack_lock_reset()


def test_parameters_keep_failed_tries_and_zero_recovery_disables(client: TpmClient,
                                                                 tpm: Tpm) -> None:
    item = _item(client)
    for _ in range(2):
        _code(lambda: client.unseal(item, Auth(b"bad")))
    client.dictionary_attack_parameters(2, 1000, 1000)
    assert tpm.state.failed_tries == 2
    assert _code(lambda: client.unseal(item, Auth(b"pin"))) == TpmRc.LOCKOUT
    client.dictionary_attack_parameters(2, 0, 1000)
    assert client.unseal(item, Auth(b"pin")) == SECRET
    for _ in range(5):
        assert _code(lambda: client.unseal(item, Auth(b"bad"))) == AUTH_FAIL
    assert tpm.state.failed_tries == 0


def test_lockout_survives_a_restart_on_the_persistent_clock(client: TpmClient, tpm: Tpm,
                                                            clock: FakeClock) -> None:
    item = _item(client)
    for _ in range(3):
        _code(lambda: client.unseal(item, Auth(b"bad")))
    clock.now += 400
    client.shutdown()
    tpm.save_clock()
    later = FakeClock()
    later.now = 5.0  # a new engine's clock starts anywhere; the TPM clock carries on
    restarted, again = _boot(tpm.state, later)
    assert restarted.state.failed_tries == 3
    item = _item(again)
    assert _code(lambda: again.unseal(item, Auth(b"pin"))) == TpmRc.LOCKOUT
    later.now += 599
    assert _code(lambda: again.unseal(item, Auth(b"pin"))) == TpmRc.LOCKOUT
    later.now += 1
    assert again.unseal(item, Auth(b"pin")) == SECRET


def test_a_guess_cut_short_by_power_loss_counts(client: TpmClient, tpm: Tpm,
                                                clock: FakeClock) -> None:
    item = _item(client)
    saved: list[bytes] = []
    tpm.on_da_used = lambda: saved.append(tpm.state.to_bytes())
    assert client.unseal(item, Auth(b"pin")) == SECRET
    assert len(saved) == 1 and PersistentState.from_bytes(saved[0]).da_used
    assert client.unseal(item, Auth(b"pin")) == SECRET
    assert len(saved) == 1
    # the power is cut after the state was saved for the check: the next Startup counts it
    restarted, _ = _boot(PersistentState.from_bytes(saved[0]), clock)
    assert restarted.state.failed_tries == 1 and not restarted.state.da_used
    # an orderly Shutdown after the use counts nothing
    client.shutdown()
    assert not tpm.state.da_used
    orderly, _ = _boot(tpm.state, clock)
    assert orderly.state.failed_tries == 0


def test_lock_reset_clears_failures_and_is_persisted(client: TpmClient, tpm: Tpm) -> None:
    item = _item(client)
    for _ in range(3):
        _code(lambda: client.unseal(item, Auth(b"bad")))
    tpm.changed = False
    client.dictionary_attack_lock_reset()
    assert tpm.state.failed_tries == 0 and tpm.changed
    assert client.unseal(item, Auth(b"pin")) == SECRET
