"""The TPM client's typed command wrappers (:mod:`cvm.guest.tpm.client`): the reply field each
one names when a reply is cut short (the one line the user sees), the parameters each one
sends (Shutdown's CLEAR/STATE, GetRandom's count, the digest list of PCR_Extend, the empty
outsideInfo and creation PCRs of Create/CreatePrimary), the Names it keeps and forgets
(created, loaded, flushed, undefined, written), a bound session's key from an authValue with
trailing zeros, and what PolicyPassword and PolicyRestart ask of a policy session."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from cvm.crypto.drbg import SeededRandom
from cvm.errors import FormatError, StatusError, UsageError
from cvm.formats.tpm2.command import AuthResponse, Command, Response
from cvm.formats.tpm2.constants import TpmAlg, TpmaNv, TpmCc, TpmNt, TpmRh, TpmSe
from cvm.formats.tpm2.nv_public import NvPublic
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.sensitive import PrivateBlob, SensitiveCreate
from cvm.formats.tpm2.tpm2b import tpm2b, writer
from cvm.guest.tpm.client import Auth, ClientSession, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.templates import sealed_template, srk_template

SECRET = b"sealed for the wrapper checks"
PARENT, ITEM, INDEX = 0x8000_0000, 0x8000_0001, 0x0150_0010
SESSION = ClientSession(0x0300_0000, TpmSe.POLICY, TpmAlg.SHA256, bytes(32), bytes(32))
NV_PUBLIC = NvPublic(INDEX, TpmAlg.SHA256, int(TpmaNv.AUTHREAD | TpmaNv.AUTHWRITE), b"", 8)
SRK = srk_template()
SHA256 = hashlib.sha256(b"measured").digest()


def _tpm() -> Tpm:
    return Tpm(random=SeededRandom(b"client wrappers"), clock=lambda: 1000.0)


def _client(tpm: Tpm, transport: Callable[[bytes], bytes] | None = None) -> TpmClient:
    client = TpmClient(transport or tpm.execute, random=SeededRandom(b"client wrappers client"))
    client.startup()
    return client


def _recording(tpm: Tpm, sent: list[bytes]) -> Callable[[bytes], bytes]:
    def transport(command: bytes) -> bytes:
        sent.append(command)
        return tpm.execute(command)
    return transport


def _codes(sent: list[bytes]) -> list[int]:
    return [int.from_bytes(c[6:10], "big") for c in sent]


# ---- the reply field a short reply names ----------------------------------------------------
def _answering(params: bytes, handles: int = 0, sessions: int = 0) -> TpmClient:
    """A client whose TPM answers every command with success and ``params`` (an NV index's
    public area and Name for TPM2_NV_ReadPublic, so an NV command can name its index)."""
    def transport(command: bytes) -> bytes:
        if command[6:14] == TpmCc.NV_READ_PUBLIC.to_bytes(4, "big") + INDEX.to_bytes(4, "big"):
            return Response(0, (), NV_PUBLIC.to_tpm2b() + tpm2b(b"nv name")).to_bytes(False)
        acks = tuple(AuthResponse(b"", 1, b"") for _ in range(sessions))
        return Response(0, (ITEM,) * handles, params, acks).to_bytes(bool(sessions))
    return TpmClient(transport, names={PARENT: b"parent", ITEM: b"item"})


def _short(what: str, field: str, offset: int, size: int = 2) -> str:
    return f"{what} reply: {field} needs {size} bytes at offset {offset:#x}, only 0 left"


PUBLIC = SRK.to_tpm2b()
BLOB = PrivateBlob(b"i" * 32, b"", b"e" * 16)
COUNTER = writer().u32(5).to_bytes() + PcrSelectionList().to_bytes()
SHORT_REPLIES: list[tuple[str, Callable[[TpmClient], object], bytes, int, int, str]] = [
    ("randomBytes", lambda c: c.get_random(8), b"", 0, 0,
     _short("GET_RANDOM", "randomBytes.size", 0)),
    ("moreData", lambda c: c.get_capability(6, 0x100, 8), b"", 0, 0,
     _short("GET_CAPABILITY", "moreData", 0, 1)),
    ("pcrUpdateCounter", lambda c: c.pcr_read(PcrSelectionList.of("sha256", [7])), b"", 0, 0,
     _short("PCR_READ", "pcrUpdateCounter", 0, 4)),
    ("count", lambda c: c.pcr_read(PcrSelectionList.of("sha256", [7])), COUNTER, 0, 0,
     _short("PCR_READ", "count", 8, 4)),
    ("digest", lambda c: c.pcr_read(PcrSelectionList.of("sha256", [7])),
     COUNTER + b"\x00\x00\x00\x01", 0, 0, _short("PCR_READ", "digest.size", 12)),
    ("event count", lambda c: c.pcr_event(7, b"event"), b"", 0, 1,
     _short("PCR_EVENT", "count", 0, 4)),
    ("hashAlg", lambda c: c.pcr_event(7, b"event"), b"\x00\x00\x00\x01", 0, 1,
     _short("PCR_EVENT", "hashAlg", 4)),
    ("event digest", lambda c: c.pcr_event(7, b"event"), b"\x00\x00\x00\x01\x00\x0b", 0, 1,
     _short("PCR_EVENT", "digest", 6, 32)),
    ("load name", lambda c: c.load(PARENT, BLOB, SRK), b"", 1, 1,
     _short("LOAD", "name.size", 0)),
    ("load_external name", lambda c: c.load_external(SRK), b"", 1, 0,
     _short("LOAD_EXTERNAL", "name.size", 0)),
    ("read_public name", lambda c: c.read_public(ITEM), PUBLIC, 0, 0,
     _short("READ_PUBLIC", "name.size", len(PUBLIC))),
    ("qualifiedName", lambda c: c.read_public(ITEM), PUBLIC + tpm2b(b"name"), 0, 0,
     _short("READ_PUBLIC", "qualifiedName.size", len(PUBLIC) + 6)),
    ("outData", lambda c: c.unseal(ITEM), b"", 0, 1, _short("UNSEAL", "outData.size", 0)),
    ("quoted", lambda c: c.quote(ITEM, b"nonce", PcrSelectionList.of("sha256", [7])), b"", 0,
     1, _short("QUOTE", "quoted.size", 0)),
    ("outHash", lambda c: c.hash(b"data"), b"", 0, 0, _short("HASH", "outHash.size", 0)),
    ("credentialBlob", lambda c: c.make_credential(ITEM, b"secret", b"name"), b"", 0, 0,
     _short("MAKE_CREDENTIAL", "credentialBlob.size", 0)),
    ("secret", lambda c: c.make_credential(ITEM, b"secret", b"name"), tpm2b(b"blob"), 0, 0,
     _short("MAKE_CREDENTIAL", "secret.size", 6)),
    ("certInfo", lambda c: c.activate_credential(ITEM, PARENT, b"blob", b"secret"), b"", 0, 2,
     _short("ACTIVATE_CREDENTIAL", "certInfo.size", 0)),
    ("nonceTPM", lambda c: c.start_auth_session(), b"", 1, 0,
     _short("START_AUTH_SESSION", "nonceTPM.size", 0)),
    ("policyDigest", lambda c: c.policy_get_digest(SESSION), b"", 0, 0,
     _short("POLICY_GET_DIGEST", "policyDigest.size", 0)),
    ("nvName", lambda c: c.nv_read_public(0x0150_0011),
     NvPublic(0x0150_0011, TpmAlg.SHA256, 0, b"", 8).to_tpm2b(), 0, 0,
     _short("NV_READ_PUBLIC", "nvName.size", 16)),
    ("data", lambda c: c.nv_read(INDEX, 8), b"", 0, 1, _short("NV_READ", "data.size", 0)),
]


@pytest.mark.parametrize(("field", "wrapper", "params", "handles", "sessions", "message"),
                         SHORT_REPLIES, ids=[case[0] for case in SHORT_REPLIES])
def test_a_short_reply_names_its_command_and_field(
        field: str, wrapper: Callable[[TpmClient], object], params: bytes, handles: int,
        sessions: int, message: str) -> None:
    with pytest.raises(FormatError) as refused:
        wrapper(_answering(params, handles, sessions))
    assert str(refused.value) == message


# ---- the parameters sent --------------------------------------------------------------------
def test_shutdown_sends_clear_by_default_and_state_when_asked() -> None:
    sent: list[bytes] = []
    for clear in (True, False):
        tpm = _tpm()
        client = _client(tpm, _recording(tpm, sent))
        client.shutdown() if clear else client.shutdown(clear=False)
    shutdowns = [c for c in sent if int.from_bytes(c[6:10], "big") == TpmCc.SHUTDOWN]
    assert [Command.parse(c, 0).parameters for c in shutdowns] == [b"\x00\x00", b"\x00\x01"]


def test_get_random_asks_for_the_count() -> None:
    tpm, sent = _tpm(), []
    client = _client(tpm, _recording(tpm, sent))
    assert len(client.get_random(17)) == 17
    assert Command.parse(sent[-1], 0).parameters == b"\x00\x11"


def test_pcr_extend_sends_each_digest_after_its_algorithm() -> None:
    tpm, sent = _tpm(), []
    client = _client(tpm, _recording(tpm, sent))
    sha1 = hashlib.sha1(b"measured").digest()
    client.pcr_extend(8, {TpmAlg.SHA1: sha1, TpmAlg.SHA256: SHA256})
    assert Command.parse(sent[-1], 1).parameters == (
        b"\x00\x00\x00\x02\x00\x04" + sha1 + b"\x00\x0b" + SHA256)


def test_pcr_extend_of_an_algorithm_that_does_not_fit_is_the_writers_error() -> None:
    client = _client(_tpm())
    with pytest.raises(UsageError, match=r"^value 65536 does not fit in 2 bytes$"):
        client.pcr_extend(8, {TpmAlg.SHA256: SHA256, 0x1_0000: SHA256})


def test_create_and_create_primary_send_no_outside_info_and_no_creation_pcrs() -> None:
    tpm, sent = _tpm(), []
    client = _client(tpm, _recording(tpm, sent))
    primary, _ = client.create_primary(TpmRh.OWNER, SRK, auth=b"a")
    template = sealed_template(b"")
    client.create(primary, template, data=SECRET, auth=b"b", parent_auth=Auth(b"a"))
    tail = tpm2b(b"") + PcrSelectionList().to_bytes()
    primary_command = Command.parse(sent[-2], 1)
    assert primary_command.parameters == (SensitiveCreate(b"a", b"").to_tpm2b() + SRK.to_tpm2b()
                                          + tail)
    create_command = Command.parse(sent[-1], 1)
    assert create_command.parameters == (SensitiveCreate(b"b", SECRET).to_tpm2b()
                                         + template.to_tpm2b() + tail)


# ---- the Names kept and forgotten -----------------------------------------------------------
def test_the_names_of_created_and_loaded_objects_are_kept_without_asking_the_tpm() -> None:
    tpm, sent = _tpm(), []
    client = _client(tpm, _recording(tpm, sent))
    primary, public = client.create_primary(TpmRh.OWNER, SRK)
    external_public = Public.from_tpm2b(public.to_tpm2b())
    external = client.load_external(external_public, TpmRh.NULL)
    sent.clear()
    assert client.names[primary] == public.name()
    assert client.names[external] == external_public.name()
    session = client.start_auth_session(TpmSe.HMAC)
    client.create(primary, sealed_template(b""), data=SECRET, parent_auth=Auth(b"", session))
    assert TpmCc.READ_PUBLIC not in _codes(sent)


def _sealed(client: TpmClient) -> tuple[int, int]:
    primary, _ = client.create_primary(TpmRh.OWNER, SRK)
    private, public = client.create(primary, sealed_template(b""), data=SECRET, auth=b"item")
    return primary, client.load(primary, private, public)


def test_a_flushed_handles_name_is_forgotten_so_a_new_object_there_is_named_afresh() -> None:
    """After TPM2_FlushContext the handle may be given to another object (loaded by someone
    else): an HMAC session over it must use that object's Name, not the flushed one's."""
    tpm = _tpm()
    client = _client(tpm)
    primary, item = _sealed(client)
    client.flush(item)
    assert item not in client.names
    other = TpmClient(tpm.execute)
    private, public = other.create(primary, sealed_template(b""), data=b"another", auth=b"x")
    assert other.load(primary, private, public) == item  # the same handle, another Name
    session = client.start_auth_session(TpmSe.HMAC)
    assert client.unseal(item, Auth(b"x", session)) == b"another"


NV_KINDS = [
    ("write", TpmNt.ORDINARY, lambda c, auth: c.nv_write(INDEX, b"12345678", auth=auth)),
    ("increment", TpmNt.COUNTER, lambda c, auth: c.nv_increment(INDEX, auth=auth)),
    ("extend", TpmNt.EXTEND, lambda c, auth: c.nv_extend(INDEX, b"data", auth=auth)),
]


def _define(client: TpmClient, nt: int) -> None:
    attributes = int(TpmaNv.AUTHREAD | TpmaNv.AUTHWRITE | TpmaNv.NO_DA) | nt << 4
    size = 32 if nt == TpmNt.EXTEND else 8
    client.nv_define_space(NvPublic(INDEX, TpmAlg.SHA256, attributes, b"", size), b"nv")


@pytest.mark.parametrize(("kind", "nt", "first_write"), NV_KINDS, ids=[k[0] for k in NV_KINDS])
def test_an_nv_indexs_name_is_forgotten_after_its_first_write_and_after_undefine(
        kind: str, nt: int, first_write: Callable[[TpmClient, Auth], None]) -> None:
    """The first write sets TPMA_NV_WRITTEN, which changes the index's Name; TPM2_NV_Undefine
    authorized by an HMAC session must name the index as it is now (and the Name of an
    undefined index is not kept)."""
    client = _client(_tpm())
    _define(client, nt)
    first_write(client, Auth(b"nv"))
    assert INDEX not in client.names
    written = client.nv_read_public(INDEX)[1]
    client.names.pop(INDEX)
    client.name_of(INDEX)
    assert client.names[INDEX] == written
    session = client.start_auth_session(TpmSe.HMAC)
    client.nv_undefine_space(INDEX, Auth(b"", session))
    assert INDEX not in client.names


@pytest.mark.parametrize(("kind", "nt", "first_write"), NV_KINDS, ids=[k[0] for k in NV_KINDS])
def test_an_hmac_authorized_undefine_after_a_write_verifies(
        kind: str, nt: int, first_write: Callable[[TpmClient, Auth], None]) -> None:
    client = _client(_tpm())
    _define(client, nt)
    client.name_of(INDEX)
    first_write(client, Auth(b"nv"))
    session = client.start_auth_session(TpmSe.HMAC)
    client.nv_undefine_space(INDEX, Auth(b"", session))
    with pytest.raises(StatusError, match="TPM_RC_HANDLE"):
        client.nv_read_public(INDEX)


# ---- sessions -------------------------------------------------------------------------------
def test_a_bound_session_keys_with_the_authvalue_without_its_trailing_zeros() -> None:
    """Part 1, 19.6.8: trailing zeros of the bind entity's authValue are removed (only
    zeros, only at the end) before the session key is derived from authValue ‖ salt. A salted
    session shows it: the salt follows the authValue in the KDF's key, so a zero left in would
    change the key (unsalted, HMAC's own zero padding of a short key would hide it)."""
    tpm = _tpm()
    client = _client(tpm)
    primary, _ = client.create_primary(TpmRh.OWNER, SRK)
    private, public = client.create(primary, sealed_template(b""), data=SECRET,
                                    auth=b"\x00 bindX")
    item = client.load(primary, private, public)
    session = client.start_auth_session(TpmSe.HMAC, bind=item, bind_auth=b"\x00 bindX\x00\x00",
                                        salt_key=primary)
    assert session.bind_name == client.names[item]
    assert client.unseal(item, Auth(b"\x00 bindX", session)) == SECRET


def test_a_policy_password_session_asks_for_the_password_not_for_the_authvalue_in_its_key(
        ) -> None:
    """After PolicyPassword the authValue goes in the clear in the HMAC field and is not part
    of the parameter-encryption key (Part 1, 19.6.13 and 21.3): the vTPM encrypts the
    unsealed data with the session key alone."""
    client = _client(_tpm())
    primary, _ = client.create_primary(TpmRh.OWNER, SRK)
    private, public = client.create(primary, sealed_template(PolicyDigest.start().password()
                                                             .value), data=SECRET, auth=b"pw")
    item = client.load(primary, private, public)
    session = client.start_auth_session(TpmSe.POLICY, symmetric_bits=128)
    client.policy_password(session)
    assert (session.password_needed, session.auth_value_needed) == (True, False)
    assert client.unseal(item, Auth(b"pw", session, encrypt=True)) == SECRET


def test_policy_restart_clears_what_the_policy_asked_for() -> None:
    client = _client(_tpm())
    session = client.start_auth_session(TpmSe.POLICY)
    client.policy_password(session)
    client.policy_restart(session)
    assert session.password_needed is False
    assert session.auth_value_needed is False
    client.policy_auth_value(session)
    client.policy_restart(session)
    assert (session.password_needed, session.auth_value_needed) == (False, False)
