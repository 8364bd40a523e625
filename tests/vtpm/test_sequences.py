"""Hash, HMAC and event sequences: their digests, tickets, PCR extends, and every refusal."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import (
    TPM_GENERATED_VALUE,
    TpmAlg,
    TpmaObject,
    TpmCap,
    TpmCc,
    TpmRh,
    TpmSe,
    TpmSt,
)
from cvm.formats.tpm2.public import KeyedHashParms, Public, Scheme
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter, for_session
from cvm.formats.tpm2.signature import Ticket
from cvm.formats.tpm2.tpm2b import read_tpm2b, tpm2b, writer
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import MAX_LOADED_OBJECTS, Tpm
from cvm.vtpm.hash_commands import hash_check_ticket
from cvm.vtpm.sequence import MAX_SEQUENCE_DATA, MAX_SEQUENCES
from cvm.vtpm.templates import ak_template, sealed_template, srk_template
from cvm.vtpm.tpm_object import verify_digest

GENERATED = TPM_GENERATED_VALUE.to_bytes(4, "big")
DATA = bytes(range(256)) * 12  # 3 KiB: three updates of 1024 bytes
NAMES = {TpmAlg.SHA1: "sha1", TpmAlg.SHA256: "sha256", TpmAlg.SHA384: "sha384",
         TpmAlg.SHA512: "sha512"}
KEY_ATTRIBUTES = (TpmaObject.FIXED_TPM | TpmaObject.FIXED_PARENT
                  | TpmaObject.SENSITIVE_DATA_ORIGIN | TpmaObject.USER_WITH_AUTH
                  | TpmaObject.SIGN_ENCRYPT)


def _code(action: object) -> int:
    with pytest.raises(StatusError) as refused:
        action()  # type: ignore[operator]
    return refused.value.code


def start(client: TpmClient, hash_alg: int = TpmAlg.SHA256, auth: bytes = b"") -> int:
    reply = client.call(TpmCc.HASH_SEQUENCE_START,
                        params=tpm2b(auth) + writer().u16(hash_alg).to_bytes(),
                        response_handles=1)
    handle = reply.handles[0]
    client.names[handle] = b""  # a sequence has no nameAlg: its Name is empty
    return handle


def hmac_start(client: TpmClient, key: int, hash_alg: int, auth: bytes = b"") -> int:
    reply = client.call(TpmCc.HMAC_START, (key,), tpm2b(auth) + writer().u16(hash_alg).to_bytes(),
                        (Auth(),), 1)
    client.names[reply.handles[0]] = b""
    return reply.handles[0]


def update(client: TpmClient, handle: int, data: bytes, auth: Auth | None = None) -> None:
    client.call(TpmCc.SEQUENCE_UPDATE, (handle,), tpm2b(data), (auth or Auth(),))


def complete(client: TpmClient, handle: int, data: bytes = b"",
             hierarchy: int = TpmRh.OWNER, auth: Auth | None = None) -> tuple[bytes, Ticket]:
    reply = client.call(TpmCc.SEQUENCE_COMPLETE, (handle,),
                        tpm2b(data) + writer().u32(hierarchy).to_bytes(), (auth or Auth(),))
    return read_tpm2b(reply.params, "result"), Ticket.read(reply.params)


def event_complete(client: TpmClient, pcr: int, handle: int,
                   data: bytes = b"") -> dict[int, bytes]:
    reply = client.call(TpmCc.EVENT_SEQUENCE_COMPLETE, (pcr, handle), tpm2b(data),
                        (Auth(), Auth()))
    digests = {}
    for _ in range(reply.params.u32("count")):
        alg = reply.params.u16("hashAlg")
        digests[alg] = reply.params.take(len(hashlib.new(NAMES[alg]).digest()), "digest")
    return digests


def hash_in_blocks(client: TpmClient, data: bytes, hash_alg: int = TpmAlg.SHA256,
                   hierarchy: int = TpmRh.OWNER) -> tuple[bytes, Ticket]:
    handle = start(client, hash_alg)
    for offset in range(0, len(data) - 1024, 1024):
        update(client, handle, data[offset : offset + 1024])
    return complete(client, handle, data[len(data) - 1024 if len(data) > 1024 else 0:],
                    hierarchy)


# ---- hash sequences ------------------------------------------------------------------------
@pytest.mark.parametrize("alg", list(NAMES))
def test_a_hash_sequence_gives_the_digest_of_all_its_blocks(client: TpmClient, tpm: Tpm,
                                                            alg: int) -> None:
    value, ticket = hash_in_blocks(client, DATA, alg)
    assert value == hashlib.new(NAMES[alg], DATA).digest()
    assert ticket == hash_check_ticket(tpm, TpmRh.OWNER, value) and ticket.digest
    assert not tpm.sequences  # completed: flushed


def test_the_ticket_is_the_hierarchys_and_none_for_null(client: TpmClient, tpm: Tpm) -> None:
    for hierarchy in (TpmRh.OWNER, TpmRh.ENDORSEMENT, TpmRh.PLATFORM):
        value, ticket = hash_in_blocks(client, DATA, hierarchy=hierarchy)
        assert ticket == hash_check_ticket(tpm, hierarchy, value)
        assert ticket.hierarchy == hierarchy
    assert hash_in_blocks(client, DATA, hierarchy=TpmRh.NULL)[1] == Ticket.null(TpmSt.HASHCHECK)


@pytest.mark.parametrize(("blocks", "ticketed"), [
    ([GENERATED + b"a forged TPMS_ATTEST", b"more"], False),  # the first block: no ticket
    ([b"an honest first block", GENERATED + b"later"], True),  # only the first block decides
    ([GENERATED[:3], b"more"], False),  # shorter than TPM_GENERATED_VALUE: no ticket
    ([b"", b"more than four bytes"], False),  # an empty first block is the first block
    ([GENERATED], False),  # only the completing buffer: it is the first block
    ([b"just the completing buffer"], True),
])
def test_the_first_block_decides_the_ticket(client: TpmClient, tpm: Tpm, blocks: list[bytes],
                                            ticketed: bool) -> None:
    handle = start(client)
    for block in blocks[:-1]:
        update(client, handle, block)
    value, ticket = complete(client, handle, blocks[-1])
    assert value == hashlib.sha256(b"".join(blocks)).digest()
    expected = hash_check_ticket(tpm, TpmRh.OWNER, value) if ticketed else Ticket.null(
        TpmSt.HASHCHECK)
    assert ticket == expected


def test_a_restricted_key_signs_a_sequences_digest_with_its_ticket(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, ak_template("ecc"))
    ak = client.load(srk, blob, public)
    client.flush(srk)
    value, ticket = hash_in_blocks(client, DATA)
    verify_digest(public, value, client.sign(ak, value, ticket=ticket))
    forged = hash_in_blocks(client, GENERATED + DATA)
    assert _code(lambda: client.sign(ak, forged[0], ticket=forged[1])) == for_parameter(
        TpmRc.TICKET, 3)


# ---- event sequences -----------------------------------------------------------------------
def test_an_event_sequence_extends_every_bank_of_the_pcr(client: TpmClient, tpm: Tpm) -> None:
    handle = start(client, TpmAlg.NULL)
    update(client, handle, DATA[:1024])
    update(client, handle, DATA[1024:2048])
    digests = event_complete(client, 16, handle, DATA[2048:])
    assert set(digests) == set(tpm.pcrs.values) == {TpmAlg.SHA1, TpmAlg.SHA256, TpmAlg.SHA384}
    for alg, value in digests.items():
        assert value == hashlib.new(NAMES[alg], DATA).digest()
        assert tpm.pcrs.read(alg, 16) == hashlib.new(NAMES[alg], bytes(len(value))
                                                     + value).digest()
    assert not tpm.sequences


def test_an_event_sequence_for_tpm_rh_null_extends_nothing(client: TpmClient, tpm: Tpm) -> None:
    before = {alg: list(values) for alg, values in tpm.pcrs.values.items()}
    counter = tpm.pcrs.update_counter
    handle = start(client, TpmAlg.NULL)
    digests = event_complete(client, TpmRh.NULL, handle, b"an event")
    assert digests[TpmAlg.SHA256] == hashlib.sha256(b"an event").digest()
    assert tpm.pcrs.values == before and tpm.pcrs.update_counter == counter
    assert not tpm.sequences


def test_an_event_sequence_refused_its_pcr_stays_open(client: TpmClient, tpm: Tpm) -> None:
    handle = start(client, TpmAlg.NULL)
    before = tpm.pcrs.read(TpmAlg.SHA256, 17)
    # PCR 17 (DRTM) is extended from locality 2 to 4 only
    assert _code(lambda: event_complete(client, 17, handle)) == TpmRc.LOCALITY
    assert tpm.pcrs.read(TpmAlg.SHA256, 17) == before and handle in tpm.sequences
    assert _code(lambda: event_complete(client, TpmRh.OWNER, handle)) == for_handle(
        TpmRc.VALUE, 1)
    event_complete(client, 16, handle)
    assert not tpm.sequences


# ---- HMAC sequences ------------------------------------------------------------------------
def _hmac_key(client: TpmClient, scheme: Scheme, attributes: int = KEY_ATTRIBUTES) -> int:
    template = Public(TpmAlg.KEYEDHASH, TpmAlg.SHA256, attributes, b"",
                      KeyedHashParms(scheme), b"")
    return client.create_primary(TpmRh.OWNER, template)[0]


@pytest.mark.parametrize(("scheme", "asked", "used"), [
    (Scheme(TpmAlg.HMAC, TpmAlg.SHA256), TpmAlg.NULL, "sha256"),  # the key's own hash
    (Scheme(TpmAlg.HMAC, TpmAlg.SHA384), TpmAlg.SHA384, "sha384"),  # named as it is
    (Scheme(), TpmAlg.SHA512, "sha512"),  # a key without a scheme: the one asked for
])
def test_an_hmac_sequence_gives_the_keys_hmac_and_no_ticket(
        client: TpmClient, tpm: Tpm, scheme: Scheme, asked: int, used: str) -> None:
    key = _hmac_key(client, scheme)
    secret = tpm.objects[key].sensitive.sensitive  # type: ignore[union-attr]
    handle = hmac_start(client, key, asked)
    client.flush(key)  # the sequence keeps its own copy of the key
    update(client, handle, DATA[:1024])
    update(client, handle, DATA[1024:2048])
    value, ticket = complete(client, handle, DATA[2048:])
    assert value == hmac.new(secret, DATA, used).digest()
    assert ticket == Ticket.null(TpmSt.HASHCHECK)
    assert not tpm.sequences


def test_hmac_start_refusals(client: TpmClient, tpm: Tpm) -> None:
    with_scheme = _hmac_key(client, Scheme(TpmAlg.HMAC, TpmAlg.SHA256))
    assert _code(lambda: hmac_start(client, with_scheme, TpmAlg.SHA1)) == for_parameter(
        TpmRc.VALUE, 2)  # not the key's hash
    assert _code(lambda: hmac_start(client, with_scheme, TpmAlg.AES)) == for_parameter(
        TpmRc.HASH, 2)
    client.flush(with_scheme)
    without = _hmac_key(client, Scheme())
    assert _code(lambda: hmac_start(client, without, TpmAlg.NULL)) == for_parameter(
        TpmRc.VALUE, 2)  # no hash anywhere
    client.flush(without)
    restricted = _hmac_key(client, Scheme(TpmAlg.HMAC, TpmAlg.SHA256),
                           KEY_ATTRIBUTES | TpmaObject.RESTRICTED)
    assert _code(lambda: hmac_start(client, restricted, TpmAlg.NULL)) == for_handle(
        TpmRc.ATTRIBUTES, 1)
    client.flush(restricted)
    sealed = client.create_primary(TpmRh.OWNER, sealed_template(), data=b"not a key")[0]
    assert _code(lambda: hmac_start(client, sealed, TpmAlg.SHA256)) == for_handle(TpmRc.KEY, 1)
    client.flush(sealed)
    signing = client.create_primary(TpmRh.OWNER, ak_template("ecc"))[0]
    assert _code(lambda: hmac_start(client, signing, TpmAlg.SHA256)) == for_handle(
        TpmRc.TYPE, 1)
    client.flush(signing)
    assert _code(lambda: hmac_start(client, TpmRh.OWNER, TpmAlg.SHA256)) == for_handle(
        TpmRc.HANDLE, 1)  # a handle the engine takes that is no object
    public = tpm.primary_public(TpmRh.OWNER, Public(
        TpmAlg.KEYEDHASH, TpmAlg.SHA256, KEY_ATTRIBUTES & ~TpmaObject.FIXED_TPM
        & ~TpmaObject.FIXED_PARENT & ~TpmaObject.SENSITIVE_DATA_ORIGIN,
        b"", KeyedHashParms(Scheme(TpmAlg.HMAC, TpmAlg.SHA256)), b""))
    public_only = client.load_external(public)
    assert _code(lambda: hmac_start(client, public_only, TpmAlg.NULL)) == for_handle(
        TpmRc.KEY, 1)  # no private part to key the HMAC
    assert not tpm.sequences


# ---- authorization -------------------------------------------------------------------------
def test_a_sequence_is_used_with_its_auth_value_only(client: TpmClient, tpm: Tpm) -> None:
    handle = start(client, auth=b"sequence secret\x00\x00")  # trailing zeros are dropped
    update(client, handle, b"with the password", Auth(b"sequence secret"))
    wrong = Auth(b"another secret")
    assert _code(lambda: update(client, handle, b"x", wrong)) == for_session(TpmRc.BAD_AUTH, 1)
    assert _code(lambda: complete(client, handle, auth=wrong)) == for_session(TpmRc.BAD_AUTH, 1)
    assert tpm.state.failed_tries == 0  # a sequence is DA-exempt
    session = client.start_auth_session(TpmSe.HMAC)
    update(client, handle, b" and an HMAC session", Auth(b"sequence secret", session))
    assert _code(lambda: update(client, handle, b"x", Auth(b"guess", session))) == for_session(
        TpmRc.BAD_AUTH, 1)
    value, _ = complete(client, handle, auth=Auth(b"sequence secret"))
    assert value == hashlib.sha256(b"with the password and an HMAC session").digest()


def test_event_sequence_complete_checks_both_authorizations(client: TpmClient) -> None:
    handle = start(client, TpmAlg.NULL, auth=b"event secret")

    def call(pcr_auth: Auth, sequence_auth: Auth) -> None:
        client.call(TpmCc.EVENT_SEQUENCE_COMPLETE, (16, handle), tpm2b(b""),
                    (pcr_auth, sequence_auth))

    assert _code(lambda: call(Auth(), Auth(b"guess"))) == for_session(TpmRc.BAD_AUTH, 2)
    assert _code(lambda: call(Auth(b"no pcr auth"), Auth(b"event secret"))) == for_session(
        TpmRc.BAD_AUTH, 1)
    call(Auth(), Auth(b"event secret"))


# ---- refusals ------------------------------------------------------------------------------
def _start_code(client: TpmClient, auth: bytes, hash_alg: int) -> int:
    return _code(lambda: start(client, hash_alg, auth))


def test_hash_sequence_start_refusals(client: TpmClient, tpm: Tpm) -> None:
    assert _start_code(client, b"", TpmAlg.AES) == for_parameter(TpmRc.HASH, 2)
    assert _start_code(client, b"x" * 65, TpmAlg.SHA256) == for_parameter(TpmRc.SIZE, 1)
    start(client, TpmAlg.SHA256, b"x" * 64)  # the largest digest is the largest authValue
    assert len(tpm.sequences) == 1


def test_the_number_of_open_sequences_is_bounded(client: TpmClient, tpm: Tpm) -> None:
    handles = [start(client) for _ in range(MAX_SEQUENCES)]
    assert _code(lambda: start(client)) == TpmRc.OBJECT_MEMORY
    client.flush(handles[0])
    start(client, TpmAlg.NULL)
    for handle in list(tpm.sequences):
        client.flush(handle)
    # sequences share the transient-object slots
    for _ in range(MAX_LOADED_OBJECTS):
        client.create_primary(TpmRh.OWNER, sealed_template(), data=b"slot")
    assert _code(lambda: start(client)) == TpmRc.OBJECT_MEMORY
    client.flush(next(iter(tpm.objects)))
    handle = start(client)
    assert _code(lambda: client.create_primary(TpmRh.OWNER, srk_template())) == (
        TpmRc.OBJECT_MEMORY)
    assert handle in tpm.sequences and handle not in tpm.objects


def test_a_sequence_holds_at_most_its_bound(client: TpmClient, tpm: Tpm) -> None:
    handle = start(client)
    block = bytes(1024)
    for _ in range(MAX_SEQUENCE_DATA // 1024):
        update(client, handle, block)
    assert _code(lambda: update(client, handle, b"x")) == TpmRc.MEMORY
    assert len(tpm.sequences[handle].data) == MAX_SEQUENCE_DATA  # the refused block is not kept
    value, _ = complete(client, handle, b"the completing buffer is not held")
    assert value == hashlib.sha256(bytes(MAX_SEQUENCE_DATA)
                                   + b"the completing buffer is not held").digest()


def test_buffers_are_at_most_max_digest_buffer(client: TpmClient) -> None:
    handle = start(client)
    update(client, handle, bytes(1024))
    assert _code(lambda: update(client, handle, bytes(1025))) == for_parameter(TpmRc.SIZE, 1)
    assert _code(lambda: complete(client, handle, bytes(1025))) == for_parameter(TpmRc.SIZE, 1)
    event = start(client, TpmAlg.NULL)
    assert _code(lambda: event_complete(client, 16, event, bytes(1025))) == for_parameter(
        TpmRc.SIZE, 1)


def test_each_completion_takes_only_its_kind(client: TpmClient, tpm: Tpm) -> None:
    hashing, event = start(client), start(client, TpmAlg.NULL)
    assert _code(lambda: complete(client, event)) == for_handle(TpmRc.MODE, 1)
    assert _code(lambda: event_complete(client, 16, hashing)) == for_handle(TpmRc.MODE, 2)
    update(client, event, b"an event sequence takes updates")
    assert _code(lambda: complete(client, hashing, hierarchy=TpmRh.LOCKOUT)) == for_parameter(
        TpmRc.VALUE, 2)
    assert set(tpm.sequences) == {hashing, event}  # a refused completion keeps the sequence
    complete(client, hashing)
    event_complete(client, 16, event)


def test_a_sequence_is_no_object_and_an_object_no_sequence(client: TpmClient, tpm: Tpm) -> None:
    key = client.create_primary(TpmRh.OWNER, sealed_template(), data=b"an object")[0]
    assert _code(lambda: update(client, key, b"x")) == for_handle(TpmRc.MODE, 1)
    assert _code(lambda: complete(client, key)) == for_handle(TpmRc.MODE, 1)
    assert _code(lambda: event_complete(client, 16, key)) == for_handle(TpmRc.MODE, 2)
    handle = start(client)
    assert _code(lambda: client.call(TpmCc.READ_PUBLIC, (handle,))) == TpmRc.SEQUENCE
    assert _code(lambda: client.call(TpmCc.CONTEXT_SAVE, (handle,))) == TpmRc.SEQUENCE
    assert _code(lambda: hmac_start(client, handle, TpmAlg.SHA256)) == TpmRc.SEQUENCE
    assert handle in tpm.sequences


def test_flush_context_and_get_capability_know_sequences(client: TpmClient, tpm: Tpm) -> None:
    handle = start(client)
    _, data = client.get_capability(TpmCap.HANDLES, 0x80000000, 8)
    assert handle.to_bytes(4, "big") in data
    client.flush(handle)
    assert not tpm.sequences
    assert _code(lambda: update(client, handle, b"x")) == for_handle(TpmRc.HANDLE, 1)
    assert _code(lambda: client.flush(handle)) == for_parameter(TpmRc.HANDLE, 1)
    value, _ = hash_in_blocks(client, b"after a flush")
    assert value == hashlib.sha256(b"after a flush").digest()
    assert _code(lambda: update(client, handle, b"x")) == for_handle(TpmRc.HANDLE, 1)
