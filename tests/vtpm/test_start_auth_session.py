"""TPM2_StartAuthSession's parameter checks (Part 3 section 11.1), each refusal with the
response code and parameter number the reference gives it."""

from __future__ import annotations

import pytest

from cvm.formats.tpm2.command import Command
from cvm.formats.tpm2.constants import TpmAlg, TpmCc, TpmRh, TpmSe
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.tpm2b import tpm2b
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import ak_template, srk_template

NONCE = b"\x11" * 32


def _start(tpm: Tpm, nonce: bytes = NONCE, salt: bytes = b"", session_type: int = TpmSe.HMAC,
           symmetric: bytes = TpmAlg.NULL.to_bytes(2, "big"),
           auth_hash: int = TpmAlg.SHA256) -> int:
    params = (tpm2b(nonce) + tpm2b(salt) + bytes([session_type]) + symmetric
              + auth_hash.to_bytes(2, "big"))
    command = Command(TpmCc.START_AUTH_SESSION, (TpmRh.NULL, TpmRh.NULL), (), params)
    return int.from_bytes(tpm.execute(command.to_bytes())[6:10], "big")


def _aes(bits: int, mode: int = TpmAlg.CFB, alg: int = TpmAlg.AES) -> bytes:
    return alg.to_bytes(2, "big") + bits.to_bytes(2, "big") + mode.to_bytes(2, "big")


@pytest.mark.parametrize("session_type", [TpmSe.HMAC, TpmSe.POLICY, TpmSe.TRIAL])
def test_every_session_type_starts(tpm: Tpm, client: TpmClient, session_type: int) -> None:
    assert _start(tpm, session_type=session_type) == 0


def test_an_unknown_session_type_is_refused(tpm: Tpm, client: TpmClient) -> None:
    assert _start(tpm, session_type=2) == for_parameter(TpmRc.VALUE, 3)


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_aes_cfb_of_each_key_size_is_accepted(tpm: Tpm, client: TpmClient, bits: int) -> None:
    assert _start(tpm, symmetric=_aes(bits)) == 0


@pytest.mark.parametrize("symmetric", [
    _aes(193), _aes(64), _aes(128, mode=TpmAlg.NULL), _aes(128, alg=TpmAlg.XOR),
])
def test_other_parameter_ciphers_are_refused(tpm: Tpm, client: TpmClient,
                                             symmetric: bytes) -> None:
    assert _start(tpm, symmetric=symmetric) == for_parameter(TpmRc.SYMMETRIC, 4)


def test_an_unknown_auth_hash_is_refused(tpm: Tpm, client: TpmClient) -> None:
    assert _start(tpm, auth_hash=TpmAlg.AES) == for_parameter(TpmRc.HASH, 5)


@pytest.mark.parametrize(("size", "code"), [
    (15, for_parameter(TpmRc.SIZE, 1)), (16, 0), (32, 0), (33, for_parameter(TpmRc.SIZE, 1)),
])
def test_nonce_caller_is_16_bytes_to_the_digest_size(tpm: Tpm, client: TpmClient, size: int,
                                                     code: int) -> None:
    assert _start(tpm, nonce=b"\x22" * size) == code


def test_a_nonce_beyond_the_largest_digest_is_a_parse_error(tpm: Tpm, client: TpmClient) -> None:
    """nonceCaller is a TPM2B_NONCE (at most 64 bytes): a larger one does not unmarshal."""
    assert _start(tpm, nonce=b"\x22" * 65) == for_parameter(TpmRc.SIZE, 1)


def test_a_salt_needs_a_tpm_key(tpm: Tpm, client: TpmClient) -> None:
    assert _start(tpm, salt=b"\x01" * 32) == for_parameter(TpmRc.VALUE, 2)


def test_three_loaded_sessions_is_the_limit(tpm: Tpm, client: TpmClient) -> None:
    for _ in range(3):
        assert _start(tpm) == 0
    assert _start(tpm) == TpmRc.SESSION_MEMORY


def test_a_salt_key_must_be_a_decryption_key(tpm: Tpm, client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, ak_template("ecc"))
    ak = client.load(srk, blob, public)
    params = (tpm2b(NONCE) + tpm2b(b"\x01" * 32) + bytes([TpmSe.HMAC])
              + TpmAlg.NULL.to_bytes(2, "big") + TpmAlg.SHA256.to_bytes(2, "big"))
    command = Command(TpmCc.START_AUTH_SESSION, (ak, TpmRh.NULL), (), params)
    assert int.from_bytes(tpm.execute(command.to_bytes())[6:10], "big") == \
        for_handle(TpmRc.KEY, 1)


def test_session_handles_and_digests_follow_the_session_type_and_hash(
    tpm: Tpm, client: TpmClient,
) -> None:
    """HMAC sessions take handles 0x02xxxxxx, policy sessions 0x03xxxxxx (Part 2 section 7.5);
    a policy session's digest starts as zeros of its authHash's size."""
    assert client.start_auth_session(TpmSe.HMAC).handle >> 24 == 0x02
    policy = client.start_auth_session(TpmSe.POLICY, auth_hash=TpmAlg.SHA384)
    assert policy.handle >> 24 == 0x03
    assert tpm.sessions[policy.handle].policy.value == bytes(48)
