"""What the object commands refuse and return (Part 3 sections 12 and 24.1, 28.4–28.5),
through the engine: each refusal with its exact response code and the case just inside it
accepted — a handle that is no object, a parent that is no storage key or that moves, a
nameAlg of NULL, external objects, what Unseal refuses, EvictControl's hierarchies and
ranges — and the creation data and ticket of Create and CreatePrimary byte for byte."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
from collections.abc import Callable
from dataclasses import replace

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmaObject, TpmCc, TpmRh, TpmSt
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.sensitive import PrivateBlob, SensitiveCreate
from cvm.formats.tpm2.signature import SigScheme, Ticket
from cvm.formats.tpm2.tpm2b import read_tpm2b, tpm2b, writer
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import sealed_template, signing_key_template, srk_template

F = TpmaObject
OWNER_FIRST = 0x81000000
PLATFORM_FIRST = 0x81800000


def _code(call: Callable[[], object]) -> int:
    with pytest.raises(StatusError) as refused:
        call()
    return refused.value.code


def _create_params(template: Public, data: bytes = b"", outside: bytes = b"",
                   selection: PcrSelectionList | None = None) -> bytes:
    return (SensitiveCreate(b"", data).to_tpm2b() + template.to_tpm2b() + tpm2b(outside)
            + (selection or PcrSelectionList()).to_bytes())


def _evict(client: TpmClient, auth: int, handle: int, persistent: int) -> None:
    client.call(TpmCc.EVICT_CONTROL, (auth, handle), writer().u32(persistent).to_bytes(),
                (Auth(),))


def _primary(client: TpmClient, hierarchy: int, template: Public) -> int:
    reply = client.call(TpmCc.CREATE_PRIMARY, (hierarchy,), _create_params(template),
                        (Auth(),), 1)
    return reply.handles[0]


# ---- handles that are no object -------------------------------------------------------------
def test_a_handle_that_passes_the_handle_check_but_is_no_object(client: TpmClient) -> None:
    """A PCR or hierarchy handle is a valid handle, but no object: TPM_RC_HANDLE with the
    handle's number."""
    handle_1 = for_handle(TpmRc.HANDLE, 1)
    assert _code(lambda: client.call(TpmCc.READ_PUBLIC, (7,))) == handle_1
    assert _code(lambda: client.unseal(TpmRh.OWNER)) == handle_1
    assert _code(lambda: client.create(TpmRh.OWNER, sealed_template(), b"x")) == handle_1
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, sealed_template(), b"x")
    assert _code(lambda: client.load(TpmRh.OWNER, blob, public)) == handle_1
    assert _code(lambda: _evict(client, TpmRh.OWNER, 7, OWNER_FIRST)) == for_handle(
        TpmRc.HANDLE, 2)


def test_create_primary_refuses_a_handle_that_is_no_hierarchy(client: TpmClient) -> None:
    assert _code(lambda: _primary(client, TpmRh.LOCKOUT, srk_template())) == for_handle(
        TpmRc.HIERARCHY, 1)


# ---- Create, Load ----------------------------------------------------------------------------
def test_a_fixed_tpm_child_needs_a_fixed_tpm_parent(client: TpmClient) -> None:
    movable = replace(srk_template(), attributes=srk_template().attributes & ~F.FIXED_TPM)
    parent, _ = client.create_primary(TpmRh.OWNER, movable)
    assert _code(lambda: client.create(parent, sealed_template(), b"x")) == for_parameter(
        TpmRc.ATTRIBUTES, 2)
    child = replace(sealed_template(), attributes=sealed_template().attributes & ~F.FIXED_TPM)
    blob, public = client.create(parent, child, b"x")
    assert client.unseal(client.load(parent, blob, public)) == b"x"


def test_load_refuses_a_name_alg_of_null(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, sealed_template(), b"x")
    null = replace(public, name_alg=TpmAlg.NULL)
    assert _code(lambda: client.load(srk, blob, null)) == for_parameter(TpmRc.HASH, 2)


def _expected_creation(tpm: Tpm, public: Public, hierarchy: int, parent: tuple[int, bytes, bytes],
                       outside: bytes, selection: PcrSelectionList, pcr_digest: bytes,
                       locality: int) -> tuple[bytes, bytes, Ticket]:
    name_alg, name, qualified = parent
    data = (selection.to_bytes() + tpm2b(pcr_digest) + bytes([locality]) +
            name_alg.to_bytes(2, "big") + tpm2b(name) + tpm2b(qualified) + tpm2b(outside))
    creation_hash = hashlib.sha256(data).digest()
    ticket = std_hmac.new(tpm.proof(hierarchy), TpmSt.CREATION.to_bytes(2, "big") + public.name()
                          + creation_hash, hashlib.sha256).digest()
    return data, creation_hash, Ticket(TpmSt.CREATION, hierarchy, ticket)


def test_the_creation_data_and_ticket_of_create(tpm: Tpm, client: TpmClient) -> None:
    """TPMS_CREATION_DATA (Part 2 Table 212) names the parent, its QN, the locality as a
    TPMA_LOCALITY bit, the PCR digest of the selection and outsideInfo; the ticket is
    HMAC(proof, TPM_ST_CREATION ‖ Name ‖ creationHash)."""
    srk, srk_public = client.create_primary(TpmRh.OWNER, srk_template())
    _, _, srk_qn = client.read_public(srk)
    client.pcr_extend(7, {TpmAlg.SHA256: hashlib.sha256(b"seven").digest()})
    selection = PcrSelectionList.of("sha256", [0, 7])
    _, _, values = client.pcr_read(selection)
    at_three = TpmClient(lambda data: tpm.execute(data, locality=3))
    reply = at_three.call(TpmCc.CREATE, (srk,),
                          _create_params(sealed_template(), b"s", b"outside", selection),
                          (Auth(),))
    PrivateBlob.read_tpm2b(reply.params)
    public = Public.read_tpm2b(reply.params)
    data = read_tpm2b(reply.params, "creationData")
    creation_hash = read_tpm2b(reply.params, "creationHash")
    ticket = Ticket.read(reply.params)
    expected = _expected_creation(
        tpm, public, TpmRh.OWNER, (TpmAlg.SHA256, srk_public.name(), srk_qn), b"outside",
        selection, hashlib.sha256(b"".join(values)).digest(), 0x08)
    assert (data, creation_hash, ticket) == expected


@pytest.mark.parametrize(("hierarchy", "locality", "bits"),
                         [(TpmRh.ENDORSEMENT, 0, 0x01), (TpmRh.NULL, 4, 0x10),
                          (TpmRh.OWNER, 32, 32)])
def test_the_creation_data_and_ticket_of_create_primary(
        tpm: Tpm, client: TpmClient, hierarchy: int, locality: int, bits: int) -> None:
    """A primary's parent is its hierarchy: nameAlg NULL, name and QN the handle; an extended
    locality (32 and up) is written as its number."""
    local = TpmClient(lambda data: tpm.execute(data, locality=locality))
    reply = local.call(TpmCc.CREATE_PRIMARY, (hierarchy,),
                       _create_params(srk_template(), outside=b"o"), (Auth(),), 1)
    public = Public.read_tpm2b(reply.params)
    data = read_tpm2b(reply.params, "creationData")
    creation_hash = read_tpm2b(reply.params, "creationHash")
    ticket = Ticket.read(reply.params)
    assert read_tpm2b(reply.params, "name") == public.name()
    handle = hierarchy.to_bytes(4, "big")
    expected = _expected_creation(tpm, public, hierarchy, (TpmAlg.NULL, handle, handle), b"o",
                                  PcrSelectionList(), b"", bits)
    assert (data, creation_hash, ticket) == expected
    _, _, qualified = client.read_public(reply.handles[0])
    assert qualified == public.name()[:2] + hashlib.sha256(handle + public.name()).digest()
    assert tpm.objects[reply.handles[0]].hierarchy == hierarchy


# ---- LoadExternal ----------------------------------------------------------------------------
def _external_pair(tpm: Tpm, client: TpmClient, attributes: int) -> tuple[Public, bytes]:
    template = replace(signing_key_template("ecc"), attributes=attributes)
    handle, public = client.create_primary(TpmRh.OWNER, template)
    sensitive = tpm.objects[handle].sensitive
    assert sensitive is not None
    client.flush(handle)
    return public, sensitive.to_bytes()


def test_an_external_key_with_its_private_part_is_loaded_in_the_null_hierarchy(
        tpm: Tpm, client: TpmClient) -> None:
    movable = F.SENSITIVE_DATA_ORIGIN | F.USER_WITH_AUTH | F.SIGN_ENCRYPT
    public, private = _external_pair(tpm, client, movable)
    assert _code(lambda: client.load_external(public, TpmRh.OWNER, private)) == for_parameter(
        TpmRc.HIERARCHY, 3)
    handle = client.load_external(public, TpmRh.NULL, private)
    assert tpm.objects[handle].hierarchy == TpmRh.NULL
    assert tpm.objects[handle].sensitive is not None
    client.sign(handle, bytes(32), SigScheme(TpmAlg.ECDSA, TpmAlg.SHA256))
    public_only = client.load_external(public, TpmRh.OWNER)
    assert tpm.objects[public_only].sensitive is None
    assert tpm.objects[public_only].hierarchy == TpmRh.OWNER


@pytest.mark.parametrize("fixed", [F.FIXED_TPM, F.FIXED_PARENT])
def test_an_external_key_with_a_private_part_is_never_fixed(
        tpm: Tpm, client: TpmClient, fixed: int) -> None:
    movable = F.SENSITIVE_DATA_ORIGIN | F.USER_WITH_AUTH | F.SIGN_ENCRYPT
    public, private = _external_pair(tpm, client, movable)
    pinned = replace(public, attributes=public.attributes | fixed)
    assert _code(lambda: client.load_external(pinned, TpmRh.NULL, private)) == for_parameter(
        TpmRc.ATTRIBUTES, 2)


def test_an_external_private_part_must_match_its_public_area(
        tpm: Tpm, client: TpmClient) -> None:
    movable = F.SENSITIVE_DATA_ORIGIN | F.USER_WITH_AUTH | F.SIGN_ENCRYPT
    public, _ = _external_pair(tpm, client, movable)
    _, unrelated = _external_pair(tpm, client, movable | F.NO_DA)  # another template, key
    assert _code(lambda: client.load_external(public, TpmRh.NULL, unrelated)) == TpmRc.BINDING


def test_load_external_refuses_a_value_that_is_no_hierarchy(client: TpmClient) -> None:
    public = signing_key_template("ecc")
    assert _code(lambda: client.load_external(public, TpmRh.LOCKOUT)) == for_parameter(
        TpmRc.VALUE, 3)


# ---- Unseal ------------------------------------------------------------------------------------
def test_unseal_refuses_keys_and_public_only_objects(tpm: Tpm, client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    assert _code(lambda: client.unseal(srk)) == for_handle(TpmRc.TYPE, 1)
    _, sealed_public = client.create(srk, sealed_template(), b"x")
    public_only = client.load_external(
        replace(sealed_public, attributes=F.USER_WITH_AUTH), TpmRh.OWNER)
    assert _code(lambda: client.unseal(public_only)) == for_handle(TpmRc.TYPE, 1)


@pytest.mark.parametrize("usage", [F.SIGN_ENCRYPT, F.DECRYPT])
def test_unseal_refuses_a_keyedhash_key(client: TpmClient, usage: int) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    hmac_key = replace(sealed_template(),
                       attributes=sealed_template().attributes | F.SENSITIVE_DATA_ORIGIN | usage)
    blob, public = client.create(srk, hmac_key)
    item = client.load(srk, blob, public)
    assert _code(lambda: client.unseal(item)) == for_handle(TpmRc.ATTRIBUTES, 1)


# ---- EvictControl ------------------------------------------------------------------------------
def test_only_owner_or_platform_persist(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    assert _code(lambda: _evict(client, TpmRh.ENDORSEMENT, srk, OWNER_FIRST)) == for_handle(
        TpmRc.HIERARCHY, 1)


def test_each_hierarchy_persists_in_its_own_range(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    out_of_range = for_parameter(TpmRc.RANGE, 1)
    assert _code(lambda: _evict(client, TpmRh.OWNER, srk, PLATFORM_FIRST)) == out_of_range
    assert _code(lambda: _evict(client, TpmRh.PLATFORM, srk, OWNER_FIRST)) == out_of_range
    _evict(client, TpmRh.PLATFORM, srk, PLATFORM_FIRST)
    _evict(client, TpmRh.OWNER, srk, OWNER_FIRST + 0x7FFFFF)
    assert _code(lambda: _evict(client, TpmRh.OWNER, srk, OWNER_FIRST + 0x7FFFFF)) == (
        TpmRc.NV_DEFINED)
    # removing: the same handle twice, and only by the hierarchy whose range holds it
    assert _code(lambda: _evict(client, TpmRh.OWNER, PLATFORM_FIRST, PLATFORM_FIRST + 1)) == (
        for_parameter(TpmRc.HANDLE, 1))
    assert _code(lambda: _evict(client, TpmRh.OWNER, PLATFORM_FIRST, PLATFORM_FIRST)) == (
        for_handle(TpmRc.HIERARCHY, 2))
    _evict(client, TpmRh.PLATFORM, PLATFORM_FIRST, PLATFORM_FIRST)
    assert _code(lambda: client.read_public(PLATFORM_FIRST)) == for_handle(TpmRc.HANDLE, 1)


def test_the_platform_persists_platform_objects_and_the_owner_does_not(
        client: TpmClient) -> None:
    primary = _primary(client, TpmRh.PLATFORM, srk_template())
    assert _code(lambda: _evict(client, TpmRh.OWNER, primary, OWNER_FIRST)) == for_handle(
        TpmRc.HIERARCHY, 2)
    _evict(client, TpmRh.PLATFORM, primary, PLATFORM_FIRST)
    assert client.read_public(PLATFORM_FIRST)[0] == client.read_public(primary)[0]


def test_null_hierarchy_public_only_and_st_clear_objects_stay(tpm: Tpm, client: TpmClient) -> None:
    null_primary = _primary(client, TpmRh.NULL, srk_template())
    assert _code(lambda: _evict(client, TpmRh.OWNER, null_primary, OWNER_FIRST)) == for_handle(
        TpmRc.HIERARCHY, 2)
    client.flush(null_primary)
    public_only = client.load_external(signing_key_template("ecc"), TpmRh.OWNER)
    assert _code(lambda: _evict(client, TpmRh.OWNER, public_only, OWNER_FIRST)) == for_handle(
        TpmRc.ATTRIBUTES, 2)
    client.flush(public_only)
    st_clear = replace(srk_template(), attributes=srk_template().attributes | F.ST_CLEAR)
    handle, _ = client.create_primary(TpmRh.OWNER, st_clear)
    assert _code(lambda: _evict(client, TpmRh.OWNER, handle, OWNER_FIRST)) == for_handle(
        TpmRc.ATTRIBUTES, 2)
    assert tpm.state.persistent == {}


def test_create_primary_checks_the_template_and_its_data_as_parameter_two(
        client: TpmClient) -> None:
    """Only KEYEDHASH objects take sensitive data (TPM_RC_SIZE on parameter 1); a template
    that breaks the attribute rules is TPM_RC_ATTRIBUTES on parameter 2 (inPublic)."""
    with pytest.raises(StatusError) as refused:
        client.create_primary(TpmRh.OWNER, srk_template(), data=b"x")
    assert refused.value.code == for_parameter(TpmRc.SIZE, 1)
    bad = replace(srk_template(), attributes=srk_template().attributes & ~F.FIXED_PARENT)
    with pytest.raises(StatusError) as refused:
        client.create_primary(TpmRh.OWNER, bad)
    assert refused.value.code == for_parameter(TpmRc.ATTRIBUTES, 2)


def test_outside_info_is_at_most_64_bytes(client: TpmClient) -> None:
    def primary(outside: bytes) -> int:
        reply = client.call(TpmCc.CREATE_PRIMARY, (TpmRh.OWNER,),
                            _create_params(srk_template(), outside=outside), (Auth(),), 1)
        return reply.handles[0]

    client.flush(primary(b"o" * 64))
    assert _code(lambda: primary(b"o" * 65)) == for_parameter(TpmRc.SIZE, 3)
