"""Primaries, keys, names, persistence of objects, resource limits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmaObject, TpmRh
from cvm.formats.tpm2.public import EccPoint
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import ak_template, ek_template, sealed_template, srk_template
from cvm.vtpm.tpm_object import qualified_name


def test_primaries_are_deterministic_per_template(client: TpmClient) -> None:
    _, public = client.create_primary(TpmRh.OWNER, srk_template())
    second, again = client.create_primary(TpmRh.OWNER, srk_template())
    assert again == public
    client.flush(second)
    varied = srk_template().with_unique(EccPoint(b"cvm", b""))
    third, other = client.create_primary(TpmRh.OWNER, varied)
    assert other.unique != public.unique
    client.flush(third)
    endorsement, ek = client.create_primary(TpmRh.ENDORSEMENT, ek_template("rsa"))
    assert ek.type == TpmAlg.RSA
    assert isinstance(ek.unique, bytes)
    assert len(ek.unique) == 256
    client.flush(endorsement)
    _, ek_ecc = client.create_primary(TpmRh.ENDORSEMENT, ek_template("ecc"))
    assert ek_ecc.auth_policy == ek.auth_policy


def test_names_and_qualified_names(client: TpmClient) -> None:
    srk, srk_public = client.create_primary(TpmRh.OWNER, srk_template())
    public, name, qn = client.read_public(srk)
    assert name == public.name() == srk_public.name()
    assert qn == qualified_name(TpmRh.OWNER.to_bytes(4, "big"), public)
    blob, sealed = client.create(srk, sealed_template(), data=b"x")
    item = client.load(srk, blob, sealed)
    _, _, item_qn = client.read_public(item)
    assert item_qn == qualified_name(qn, sealed)


def test_object_memory_and_flush(client: TpmClient) -> None:
    handles = [client.create_primary(TpmRh.OWNER, srk_template())[0] for _ in range(3)]
    with pytest.raises(StatusError) as refused:
        client.create_primary(TpmRh.OWNER, srk_template())
    assert refused.value.code == TpmRc.OBJECT_MEMORY
    client.flush(handles[0])
    with pytest.raises(StatusError) as refused:
        client.flush(handles[0])
    assert refused.value.code == for_parameter(TpmRc.HANDLE, 1)
    with pytest.raises(StatusError) as refused:
        client.read_public(handles[0])
    assert refused.value.code == for_handle(TpmRc.HANDLE, 1)


def test_template_checks(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    bad = ak_template("ecc")
    with pytest.raises(StatusError) as refused:
        client.create(srk, replace(bad, attributes=bad.attributes | TpmaObject.DECRYPT))
    assert refused.value.code == for_parameter(TpmRc.ATTRIBUTES, 2)
    with pytest.raises(StatusError) as refused:
        client.create(srk, replace(bad, attributes=bad.attributes & ~TpmaObject.FIXED_PARENT))
    assert refused.value.code == for_parameter(TpmRc.ATTRIBUTES, 2)
    sealed, public = client.create(srk, sealed_template(), data=b"x")
    item = client.load(srk, sealed, public)
    with pytest.raises(StatusError) as refused:
        client.create(item, sealed_template(), data=b"y")
    assert refused.value.code == for_handle(TpmRc.TYPE, 1)


def test_evict_control_survives_a_power_cycle(client: TpmClient, tpm: Tpm,
                                              make_tpm: object) -> None:
    srk, public = client.create_primary(TpmRh.OWNER, srk_template())
    client.evict_control(srk, 0x81000001)
    with pytest.raises(StatusError) as refused:
        client.evict_control(srk, 0x81000001)
    assert refused.value.code == TpmRc.NV_DEFINED
    blob, sealed = client.create(0x81000001, sealed_template(), data=b"persist")
    reborn = make_tpm(type(tpm.state).from_bytes(tpm.state.to_bytes()))  # type: ignore[operator]
    other = TpmClient(reborn.execute)
    other.startup()
    item = other.load(0x81000001, blob, sealed)
    assert other.unseal(item, Auth()) == b"persist"
    assert other.read_public(0x81000001)[0] == public
    other.evict_control(0x81000001, 0x81000001)
    with pytest.raises(StatusError):
        other.read_public(0x81000001)


def test_hierarchy_auth(client: TpmClient) -> None:
    """A wrong owner authValue is TPM_RC_BAD_AUTH and never counts toward the lockout: the
    hierarchies are DA-exempt (Part 1 19.8.1), unlike lockoutAuth."""
    client.hierarchy_change_auth(TpmRh.OWNER, b"owner pw")
    for _ in range(5):
        with pytest.raises(StatusError) as refused:
            client.create_primary(TpmRh.OWNER, srk_template())
        assert refused.value.code == 0x9A2
    handle, _ = client.create_primary(TpmRh.OWNER, srk_template(),
                                      hierarchy_auth=Auth(b"owner pw"))
    assert handle
