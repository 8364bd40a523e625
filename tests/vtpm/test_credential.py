"""MakeCredential / ActivateCredential: an AK proven to sit beside the EK."""

from __future__ import annotations

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmRh, TpmSe
from cvm.formats.tpm2.response_code import TpmRc, for_parameter
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.templates import ak_template, ek_template, srk_template


def _ek_auth(client: TpmClient) -> Auth:
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_secret(session, TpmRh.ENDORSEMENT)
    return Auth(b"", session, continue_session=False)


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_activate_credential_with_the_ek_policy(client: TpmClient, kind: str) -> None:
    ek, ek_public = client.create_primary(TpmRh.ENDORSEMENT, ek_template(kind))
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, ak_public = client.create(srk, ak_template("ecc"))
    ak = client.load(srk, blob, ak_public)
    credential_blob, secret = client.make_credential(ek, b"verifier secret", ak_public.name())
    assert client.activate_credential(ak, ek, credential_blob, secret,
                                      key_auth=_ek_auth(client)) == b"verifier secret"
    other_blob, other_secret = client.make_credential(ek, b"x", ek_public.name())
    with pytest.raises(StatusError) as refused:
        client.activate_credential(ak, ek, other_blob, other_secret, key_auth=_ek_auth(client))
    assert refused.value.code == for_parameter(TpmRc.INTEGRITY, 1)
    with pytest.raises(StatusError) as refused:
        client.activate_credential(ak, ek, credential_blob, secret)
    assert refused.value.code == TpmRc.AUTH_UNAVAILABLE
