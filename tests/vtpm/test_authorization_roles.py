"""Who may authorize what, session by session (Part 1 sections 19.6-19.8): userWithAuth and
adminWithPolicy for passwords and HMAC sessions alike, which failures count toward the
dictionary-attack lockout, the exact response code of each refusal, and the self-healing
timers as the reference's DASelfHeal keeps them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.command import AuthCommand, Command
from cvm.formats.tpm2.constants import TpmaObject, TpmaSession, TpmCc, TpmRh, TpmSe
from cvm.formats.tpm2.response_code import TpmRc, for_session
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.state import PersistentState
from cvm.vtpm.templates import ak_template, ek_template, sealed_template, srk_template

from .conftest import FakeClock

SECRET = b"roles"


def _code(action: Any) -> int:
    with pytest.raises(StatusError) as refused:
        action()
    return int(refused.value.code)


def _sealed(client: TpmClient, policy: bytes = b"", extra: int = 0, no_da: bool = False,
            parent_auth: bytes = b"") -> int:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(no_da=True), auth=parent_auth)
    template = sealed_template(policy, no_da=no_da)
    template = replace(template, attributes=template.attributes | extra)
    blob, public = client.create(srk, template, data=SECRET, auth=b"pw",
                                 parent_auth=Auth(parent_auth))
    item = client.load(srk, blob, public, parent_auth=Auth(parent_auth))
    client.flush(srk)
    return item


def test_admin_with_policy_does_not_bar_the_user_role(client: TpmClient) -> None:
    item = _sealed(client, extra=TpmaObject.ADMIN_WITH_POLICY)
    assert client.unseal(item, Auth(b"pw")) == SECRET
    assert client.unseal(item, Auth(b"pw", client.start_auth_session(TpmSe.HMAC))) == SECRET


def test_without_user_with_auth_no_hmac_session_may_use_the_auth_value(client: TpmClient) -> None:
    item = _sealed(client, policy=PolicyDigest.start().auth_value().value)
    session = client.start_auth_session(TpmSe.HMAC)
    assert _code(lambda: client.unseal(item, Auth(b"pw", session))) == TpmRc.AUTH_UNAVAILABLE
    assert _code(lambda: client.unseal(item, Auth(b"pw"))) == TpmRc.AUTH_UNAVAILABLE


def test_admin_with_policy_bars_passwords_and_hmac_sessions_in_the_admin_role(
    client: TpmClient,
) -> None:
    """ActivateCredential's activateHandle is an ADMIN-role authorization (Part 3 12.5)."""
    ek, _ = client.create_primary(TpmRh.ENDORSEMENT, ek_template("ecc"))
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    template = ak_template("ecc")
    template = replace(template, attributes=template.attributes | TpmaObject.ADMIN_WITH_POLICY)
    blob, ak_public = client.create(srk, template)
    ak = client.load(srk, blob, ak_public)
    credential_blob, secret = client.make_credential(ek, b"c", ak_public.name())

    def ek_auth() -> Auth:
        session = client.start_auth_session(TpmSe.POLICY)
        client.policy_secret(session, TpmRh.ENDORSEMENT)
        return Auth(b"", session, continue_session=False)

    for activate_auth in (Auth(b""), Auth(b"", client.start_auth_session(TpmSe.HMAC))):
        assert _code(lambda a=activate_auth: client.activate_credential(
            ak, ek, credential_blob, secret, activate_auth=a, key_auth=ek_auth(),
        )) == TpmRc.AUTH_UNAVAILABLE


def test_a_wrong_hmac_counts_as_a_failed_auth_value(client: TpmClient, tpm: Tpm) -> None:
    """An HMAC session uses the authValue, so a wrong HMAC is a dictionary-attack failure;
    a policy session without PolicyAuthValue does not, so its wrong HMAC counts nothing."""
    item = _sealed(client)
    session = client.start_auth_session(TpmSe.HMAC)
    assert _code(lambda: client.unseal(item, Auth(b"bad", session))) == \
        for_session(TpmRc.AUTH_FAIL, 1)
    assert tpm.state.failed_tries == 1
    policy = PolicyDigest.start().command_code(TpmCc.UNSEAL).value
    guarded = _sealed(client, policy=policy)
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_command_code(session, TpmCc.UNSEAL)
    session.session_key = b"not the session key"
    assert _code(lambda: client.unseal(guarded, Auth(b"", session))) == \
        for_session(TpmRc.AUTH_FAIL, 1)
    assert tpm.state.failed_tries == 1


def test_lockout_refuses_an_hmac_session_too(client: TpmClient, tpm: Tpm) -> None:
    item = _sealed(client)
    for _ in range(3):
        _code(lambda: client.unseal(item, Auth(b"bad")))
    session = client.start_auth_session(TpmSe.HMAC)
    assert _code(lambda: client.unseal(item, Auth(b"pw", session))) == TpmRc.LOCKOUT


def test_a_wrong_policy_password_fails_on_its_session(client: TpmClient, tpm: Tpm) -> None:
    item = _sealed(client, policy=PolicyDigest.start().password().value)
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_password(session)
    assert _code(lambda: client.unseal(item, Auth(b"bad", session))) == \
        for_session(TpmRc.AUTH_FAIL, 1)
    assert tpm.state.failed_tries == 1


def test_an_unknown_session_and_a_trial_session_are_refused_by_number(
    client: TpmClient, tpm: Tpm,
) -> None:
    item = _sealed(client)
    area = (AuthCommand(0x02000007, b"n" * 32, TpmaSession.CONTINUE_SESSION, b"m" * 32),)
    raw = tpm.execute(Command(TpmCc.UNSEAL, (item,), area).to_bytes())
    assert int.from_bytes(raw[6:10], "big") == for_session(TpmRc.HANDLE, 1)
    trial = client.start_auth_session(TpmSe.TRIAL)
    assert _code(lambda: client.unseal(item, Auth(b"pw", trial))) == \
        for_session(TpmRc.AUTH_TYPE, 1)


def test_parameters_are_decrypted_with_the_auth_value_in_the_key(client: TpmClient) -> None:
    """The decrypt session's key is sessionKey ‖ authValue of the entity it authorizes."""
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(no_da=True), auth=b"parent")
    session = client.start_auth_session(TpmSe.HMAC, symmetric_bits=128)
    blob, public = client.create(srk, sealed_template(), data=SECRET, auth=b"pw",
                                 parent_auth=Auth(b"parent", session, decrypt=True))
    item = client.load(srk, blob, public, parent_auth=Auth(b"parent"))
    assert client.unseal(item, Auth(b"pw")) == SECRET


def test_self_healing_keeps_the_reference_timer(client: TpmClient, tpm: Tpm,
                                                clock: FakeClock) -> None:
    """Each forgiven failure moves the self-heal timer by recoveryTime, not to now."""
    client.dictionary_attack_parameters(5, 10, 1000)
    item = _sealed(client)
    for _ in range(3):
        _code(lambda: client.unseal(item, Auth(b"bad")))
    start = tpm.state.self_heal_ms
    clock.now += 25  # two recovery periods and a half
    assert client.unseal(item, Auth(b"pw")) == SECRET
    assert tpm.state.failed_tries == 1
    assert tpm.state.self_heal_ms == start + 20_000
    clock.now += 4  # 29 s since the last failure: the third period is not complete
    assert client.unseal(item, Auth(b"pw")) == SECRET
    assert tpm.state.failed_tries == 1
    clock.now += 1
    assert client.unseal(item, Auth(b"pw")) == SECRET
    assert tpm.state.failed_tries == 0
    restored = PersistentState.from_bytes(tpm.state.to_bytes())
    assert (restored.failed_tries, restored.self_heal_ms) == (0, start + 30_000)


def test_lockout_auth_recovers_lockout_recovery_seconds_after_its_failure(
    client: TpmClient, tpm: Tpm, clock: FakeClock,
) -> None:
    client.dictionary_attack_parameters(3, 1000, 100)
    clock.now += 500  # the TPM clock is well past zero when lockoutAuth fails
    reset = client.dictionary_attack_lock_reset
    assert _code(lambda: reset(Auth(b"guess"))) == for_session(TpmRc.AUTH_FAIL, 1)
    assert _code(reset) == TpmRc.LOCKOUT
    clock.now += 99
    assert _code(reset) == TpmRc.LOCKOUT
    clock.now += 1
    reset()
