"""The ``systemd-tpm2`` LUKS2 token (:mod:`cvm.guest.tpm.luks_token`), check by check: every
field ``from_json`` refuses with its message, the defaults it fills, what ``to_json`` writes,
the policy a token describes, and enroll's refusals and the keyslot it adds."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cvm.crypto.drbg import SeededRandom
from cvm.disk.volume import Luks2Volume
from cvm.errors import FormatError, UsageError
from cvm.formats.luks2.metadata import Pbkdf2Kdf
from cvm.formats.tpm2.constants import TpmAlg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.sealed_blob import SealedBlob
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.luks_token import (
    KEYSLOT_KDF,
    SystemdTpm2Token,
    enroll,
    tpm2_tokens,
    unlock,
)
from cvm.guest.tpm.seal import SealPolicy, seal
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import public_from_pem

SEVEN = PcrSelectionList.of("sha256", [7])
SECRET = bytes(range(32))
PEM = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def blob() -> SealedBlob:
    tpm = Tpm(random=SeededRandom(b"token checks"), clock=lambda: 1000.0)
    client = TpmClient(tpm.execute, random=SeededRandom(b"token checks client"))
    client.startup()
    return seal(client, SECRET, b"\x01" * 32)


def _token(blob: SealedBlob, **changes: Any) -> dict[str, Any]:
    token: dict[str, Any] = {
        "type": "systemd-tpm2", "keyslots": ["1"],
        "tpm2-blob": base64.b64encode(blob.to_bytes()).decode(), "tpm2-pcrs": [7],
        "tpm2-pcr-bank": "sha256", "tpm2-primary-alg": "ecc",
        "tpm2-policy-hash": "ab" * 32, "tpm2-pin": False,
    }
    token.update(changes)
    return {k: v for k, v in token.items() if v is not None}


def _refused(token: dict[str, Any]) -> str:
    with pytest.raises(FormatError) as refused:
        SystemdTpm2Token.from_json(token)
    return str(refused.value)


# -- from_json ---------------------------------------------------------------------------------
def test_a_full_token_is_read_field_by_field(blob: SealedBlob) -> None:
    token = SystemdTpm2Token.from_json(_token(
        blob, keyslots=["3", "12"], **{"tpm2-pcrs": [0, 7, 23], "tpm2-pcr-bank": "sha1",
                                       "tpm2-primary-alg": "rsa", "tpm2-pin": True,
                                       "tpm2_pubkey": base64.b64encode(PEM).decode(),
                                       "tpm2_pubkey_pcrs": [11], "tpm2_salt": "c2FsdA=="}))
    assert token.keyslots == (3, 12)
    assert token.blob == blob
    assert token.pcrs == (0, 7, 23)
    assert token.policy_hash == b"\xab" * 32
    assert (token.pcr_bank, token.primary_alg, token.pin) == ("sha1", "rsa", True)
    assert token.pubkey_pem == PEM and token.pubkey_pcrs == (11,)
    assert token.extra == {"tpm2_salt": "c2FsdA=="}


def test_absent_optional_fields_take_systemds_defaults(blob: SealedBlob) -> None:
    raw = {"type": "systemd-tpm2", "keyslots": [],
           "tpm2-blob": base64.b64encode(blob.to_bytes()).decode(), "tpm2-policy-hash": ""}
    token = SystemdTpm2Token.from_json(raw)
    assert token.keyslots == () and token.pcrs == () and token.pubkey_pcrs == ()
    assert (token.pcr_bank, token.primary_alg, token.pin) == ("sha256", "ecc", False)
    assert token.pubkey_pem is None and token.policy_hash == b"" and token.extra == {}
    assert SystemdTpm2Token.from_json({**raw, "tpm2_pubkey": 5}).pubkey_pem is None


@pytest.mark.parametrize("kind", ["luks2-keyring", None])
def test_another_token_type_is_refused(blob: SealedBlob, kind: str | None) -> None:
    assert _refused(_token(blob, type=kind)) == f"not a systemd-tpm2 token: type {kind!r}"


@pytest.mark.parametrize("field", ["tpm2-blob", "tpm2-policy-hash"])
def test_a_sharded_token_is_refused(blob: SealedBlob, field: str) -> None:
    assert _refused(_token(blob, **{field: ["AA==", "AA=="]})) == (
        "sharded systemd-tpm2 tokens (array blobs) are not supported")


@pytest.mark.parametrize(("field", "value"), [("tpm2-blob", None), ("tpm2-policy-hash", None),
                                              ("tpm2-blob", 5), ("tpm2-policy-hash", 5)])
def test_the_blob_and_the_policy_hash_are_required(blob: SealedBlob, field: str,
                                                   value: object) -> None:
    token = _token(blob)
    if value is None:
        del token[field]
    else:
        token[field] = value
    assert _refused(token) == "systemd-tpm2 token: tpm2-blob and tpm2-policy-hash are required"


@pytest.mark.parametrize("change", [
    {"tpm2-blob": "not base64!"},
    {"tpm2-blob": "AAAA*AAA"},  # a character outside the alphabet is refused, not skipped
    {"tpm2-policy-hash": "xyz"},
    {"tpm2_pubkey": "%%%"},
])
def test_bad_base64_or_hex_is_refused(blob: SealedBlob, change: dict[str, str]) -> None:
    assert _refused(_token(blob, **change)) == "systemd-tpm2 token: bad base64 or hex field"


def test_a_blob_that_is_not_private_and_public_is_refused_by_its_parser(blob: SealedBlob) -> None:
    said = _refused(_token(blob, **{"tpm2-blob": base64.b64encode(b"\x00\x04ab").decode()}))
    assert said != "systemd-tpm2 token: bad base64 or hex field" and "TPM2B" in said


@pytest.mark.parametrize("keyslots", ["1", [1], ["one"], ["1", "-1"], [True]])
def test_keyslots_must_be_a_list_of_decimal_strings(blob: SealedBlob, keyslots: object) -> None:
    assert _refused(_token(blob, keyslots=keyslots)) == (
        "systemd-tpm2 token: keyslots is not a list of numbers")


def test_the_pcr_bank_must_be_a_known_hash_name(blob: SealedBlob) -> None:
    assert _refused(_token(blob, **{"tpm2-pcr-bank": 256})) == (
        "systemd-tpm2 token: tpm2-pcr-bank is not a string")
    assert _refused(_token(blob, **{"tpm2-pcr-bank": "md5"})) == (
        "unknown hash algorithm or PCR bank 'md5'")


@pytest.mark.parametrize("pin", [1, "true", 0])
def test_the_pin_flag_must_be_a_boolean(blob: SealedBlob, pin: object) -> None:
    assert _refused(_token(blob, **{"tpm2-pin": pin})) == (
        "systemd-tpm2 token: tpm2-pin is not a boolean")


@pytest.mark.parametrize("field", ["tpm2-pcrs", "tpm2_pubkey_pcrs"])
@pytest.mark.parametrize("pcrs", [7, [24], [-1], [True], ["7"], [7, 1.0]])
def test_pcr_lists_hold_pcr_numbers_only(blob: SealedBlob, field: str, pcrs: object) -> None:
    assert _refused(_token(blob, **{field: pcrs})) == (
        f"systemd-tpm2 token: {field} is not a list of PCR numbers")


@pytest.mark.parametrize("field", ["tpm2-pcrs", "tpm2_pubkey_pcrs"])
def test_pcrs_0_and_23_are_pcr_numbers(blob: SealedBlob, field: str) -> None:
    token = SystemdTpm2Token.from_json(_token(blob, **{field: [0, 23]}))
    assert (token.pcrs if field == "tpm2-pcrs" else token.pubkey_pcrs) == (0, 23)


# -- to_json and the policy --------------------------------------------------------------------
def test_to_json_writes_systemds_fields(blob: SealedBlob) -> None:
    token = SystemdTpm2Token((2,), blob, (7, 14), b"\xcd" * 32, "sha256", "ecc", True)
    assert token.to_json() == {
        "type": "systemd-tpm2", "keyslots": ["2"],
        "tpm2-blob": base64.b64encode(blob.to_bytes()).decode(), "tpm2-pcrs": [7, 14],
        "tpm2-pcr-bank": "sha256", "tpm2-primary-alg": "ecc", "tpm2-policy-hash": "cd" * 32,
        "tpm2-pin": True,
    }
    signed = SystemdTpm2Token((2,), blob, (), b"", pubkey_pem=PEM, pubkey_pcrs=(11,),
                              extra={"tpm2_srk": "AA=="})
    written = signed.to_json()
    assert written["tpm2_pubkey_pcrs"] == [11]
    assert written["tpm2_pubkey"] == base64.b64encode(PEM).decode()
    assert written["tpm2_srk"] == "AA=="
    assert SystemdTpm2Token.from_json(written) == signed


def test_the_seal_policy_is_the_tokens_bank_pcrs_pin_and_signer(blob: SealedBlob) -> None:
    token = SystemdTpm2Token((1,), blob, (0, 7), b"", "sha1", pin=True, pubkey_pem=PEM)
    policy = token.seal_policy()
    assert policy.selection == PcrSelectionList.of("sha1", [0, 7])
    assert policy.pin and policy.signer == public_from_pem(PEM)
    assert SystemdTpm2Token((1,), blob, (7,), b"").seal_policy() == SealPolicy(SEVEN)


# -- enroll and unlock -------------------------------------------------------------------------
@pytest.fixture
def client() -> TpmClient:
    tpm = Tpm(random=SeededRandom(b"token enroll"), clock=lambda: 1000.0)
    client = TpmClient(tpm.execute, random=SeededRandom(b"token enroll client"))
    client.startup()
    client.pcr_extend(7, {TpmAlg.SHA256: hashlib.sha256(b"shim").digest()})
    return client


@pytest.fixture
def volume(recovery_volume: tuple[Luks2Volume, bytes]) -> tuple[Luks2Volume, bytes]:
    return recovery_volume


def test_enroll_refuses_a_secret_of_another_size(volume: tuple[Luks2Volume, bytes],
                                                 client: TpmClient) -> None:
    disk, key = volume
    values = client.pcr_read(SEVEN)[2]
    for size in (31, 33):
        with pytest.raises(UsageError, match=r"^the sealed secret must be 32 bytes$"):
            enroll(disk, key, client, SealPolicy(SEVEN), values, bytes(size))
    assert disk.tokens == {} and list(disk.metadata.keyslots) == [0]


@pytest.mark.parametrize(("flag", "pin"), [(True, None), (False, b"1234")])
def test_enroll_refuses_a_pin_flag_that_disagrees_with_the_pin(
        volume: tuple[Luks2Volume, bytes], client: TpmClient, flag: bool,
        pin: bytes | None) -> None:
    disk, key = volume
    with pytest.raises(UsageError, match=r"^the policy's PIN flag and the PIN given disagree$"):
        enroll(disk, key, client, SealPolicy(SEVEN, pin=flag), client.pcr_read(SEVEN)[2],
               SECRET, pin)
    assert disk.tokens == {}


@pytest.mark.parametrize("pin", [None, b"1234"])
def test_enroll_adds_a_pbkdf2_keyslot_for_the_secret_and_its_token(
        volume: tuple[Luks2Volume, bytes], client: TpmClient, pin: bytes | None) -> None:
    disk, key = volume
    policy = SealPolicy(SEVEN, pin=pin is not None)
    values = client.pcr_read(SEVEN)[2]
    number = enroll(disk, key, client, policy, values, SECRET, pin, PEM, (11,))
    disk.add_token({"type": "cvm-other", "keyslots": []})
    tokens = tpm2_tokens(disk)
    assert list(tokens) == [number]
    token = tokens[number]
    assert token.keyslots == (1,)
    assert token.pcrs == (7,) and token.pcr_bank == "sha256" and token.primary_alg == "ecc"
    assert token.pin is (pin is not None)
    assert token.policy_hash == policy.digest(values).value
    assert token.blob.public.auth_policy == token.policy_hash
    assert token.pubkey_pem == PEM and token.pubkey_pcrs == (11,)
    keyslot = disk.metadata.keyslots[1]
    assert isinstance(keyslot.kdf, Pbkdf2Kdf)
    assert (keyslot.kdf.hash, keyslot.kdf.iterations) == ("sha512", 1000) == (
        KEYSLOT_KDF.hash, KEYSLOT_KDF.iterations)
    assert disk.unlock(base64.b64encode(SECRET)) == key


def test_enroll_with_no_pcrs_names_the_sha256_bank(volume: tuple[Luks2Volume, bytes],
                                                  client: TpmClient) -> None:
    disk, key = volume
    number = enroll(disk, key, client, SealPolicy(PcrSelectionList(), pin=True), [], SECRET,
                    b"1234")
    token = tpm2_tokens(disk)[number]
    assert token.pcr_bank == "sha256" and token.pcrs == ()


def test_enroll_names_the_bank_of_the_selection(volume: tuple[Luks2Volume, bytes],
                                               client: TpmClient) -> None:
    disk, key = volume
    selection = PcrSelectionList.of("sha1", [7])
    number = enroll(disk, key, client, SealPolicy(selection), client.pcr_read(selection)[2],
                    SECRET)
    assert tpm2_tokens(disk)[number].pcr_bank == "sha1"


def test_unlock_returns_the_volume_key(volume: tuple[Luks2Volume, bytes],
                                       client: TpmClient) -> None:
    disk, key = volume
    number = enroll(disk, key, client, SealPolicy(SEVEN), client.pcr_read(SEVEN)[2], SECRET)
    assert unlock(disk, tpm2_tokens(disk)[number], client) == key


@pytest.mark.parametrize("extra", ["*", "\n", " "])
def test_a_blob_with_a_character_outside_base64_is_refused(blob: SealedBlob, extra: str) -> None:
    """Strict base64: a character outside the alphabet is refused, not skipped (the blob with
    it removed would parse)."""
    text = base64.b64encode(blob.to_bytes()).decode()
    assert SystemdTpm2Token.from_json(_token(blob, **{"tpm2-blob": text})).blob == blob
    spoiled = text[:8] + extra + text[8:]
    assert _refused(_token(blob, **{"tpm2-blob": spoiled})) == (
        "systemd-tpm2 token: bad base64 or hex field")
