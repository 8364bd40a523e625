"""The protection of a private area under its storage parent, against a reference written
from TCG "TPM 2.0 Library, Part 1", revision 1.59, sections 23.3–23.4 (and the reference
TPM's ``Object_spt.c``): the exact bytes ``wrap`` produces, and each refusal of ``unwrap`` —
a blob whose HMAC is right but whose IV or plaintext is not — with its response code."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
from dataclasses import replace

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmRh
from cvm.formats.tpm2.response_code import TpmRc, for_parameter
from cvm.formats.tpm2.sensitive import PrivateBlob, Sensitive
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm import protection
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import ak_template, sealed_template, srk_template
from cvm.vtpm.tpm_object import TpmObject

IV = bytes(range(16))


def _kdfa(algorithm: str, key: bytes, label: bytes, context: bytes, bits: int) -> bytes:
    """SP 800-108 counter mode with HMAC (Part 1 section 11.4.10.2), one empty contextV."""
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        block = (counter.to_bytes(4, "big") + label + b"\x00" + context
                 + bits.to_bytes(4, "big"))
        out += std_hmac.new(key, block, algorithm).digest()
        counter += 1
    return out[:bits // 8]


def _cfb(key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), CFB(iv))
    engine = cipher.encryptor() if encrypt else cipher.decryptor()
    return engine.update(data) + engine.finalize()


def _reference_keys(parent: TpmObject, name: bytes) -> tuple[bytes, bytes]:
    assert parent.sensitive is not None
    seed = parent.sensitive.seed_value
    return (_kdfa("sha256", seed, b"STORAGE", name, 128),
            _kdfa("sha256", seed, b"INTEGRITY", b"", 256))


def _reference_blob(parent: TpmObject, name: bytes, iv: bytes, plain: bytes) -> PrivateBlob:
    """A blob protected as Part 1 23.3/23.4 say, around any plaintext and IV."""
    sym_key, hmac_key = _reference_keys(parent, name)
    encrypted = _cfb(sym_key, iv[:16].ljust(16, b"\x00"), plain, True)
    region = len(iv).to_bytes(2, "big") + iv + encrypted
    integrity = std_hmac.new(hmac_key, region + name, hashlib.sha256).digest()
    return PrivateBlob(integrity, iv, encrypted)


@pytest.fixture
def parent(tpm: Tpm, client: TpmClient) -> TpmObject:
    handle, _ = client.create_primary(TpmRh.OWNER, srk_template())
    return tpm.objects[handle]


def _sealed(parent: TpmObject) -> tuple[TpmObject, Sensitive]:
    public = sealed_template().with_unique(b"u" * 32)
    sensitive = Sensitive(TpmAlg.KEYEDHASH, b"pw", b"s" * 32, b"secret")
    return TpmObject(public, sensitive, TpmRh.OWNER, b""), sensitive


def test_wrap_gives_the_bytes_of_the_reference_construction(parent: TpmObject) -> None:
    """symKey = KDFa(SHA-256, seed, "STORAGE", Name, ∅, 128), hmacKey = KDFa(SHA-256, seed,
    "INTEGRITY", ∅, ∅, 256), the authValue padded to the child's digest size, the integrity
    HMAC over TPM2B(IV) ‖ ciphertext ‖ Name."""
    child, sensitive = _sealed(parent)
    blob = protection.wrap(parent, child.public, sensitive, IV)
    name = child.public.name()
    padded = replace(sensitive, auth_value=b"pw".ljust(32, b"\x00")).to_bytes()
    plain = len(padded).to_bytes(2, "big") + padded
    assert blob == _reference_blob(parent, name, IV, plain)
    assert protection.unwrap(parent, child.public, blob) == replace(
        sensitive, auth_value=b"pw".ljust(32, b"\x00"))


def test_unwrap_checks_the_hmac_over_the_name(parent: TpmObject) -> None:
    child, sensitive = _sealed(parent)
    blob = protection.wrap(parent, child.public, sensitive, IV)
    other = child.public.with_unique(b"v" * 32)
    with pytest.raises(StatusError, match=r"^private area integrity failed") as refused:
        protection.unwrap(parent, other, blob)
    assert refused.value.code == for_parameter(TpmRc.INTEGRITY, 1)


def test_an_authentic_blob_with_a_short_iv_is_refused_as_a_value(parent: TpmObject) -> None:
    child, sensitive = _sealed(parent)
    padded = replace(sensitive, auth_value=b"pw".ljust(32, b"\x00")).to_bytes()
    blob = _reference_blob(parent, child.public.name(), IV[:15],
                           len(padded).to_bytes(2, "big") + padded)
    with pytest.raises(StatusError, match=r"^private area IV is not one AES block") as refused:
        protection.unwrap(parent, child.public, blob)
    assert refused.value.code == for_parameter(TpmRc.VALUE, 1)


def test_an_authentic_blob_that_does_not_decrypt_to_a_sensitive_area_is_refused(
        parent: TpmObject) -> None:
    child, _ = _sealed(parent)
    blob = _reference_blob(parent, child.public.name(), IV, b"\x00\x05garbage")
    with pytest.raises(StatusError, match=r"^private area does not decrypt") as refused:
        protection.unwrap(parent, child.public, blob)
    assert refused.value.code == TpmRc.SENSITIVE


@pytest.mark.parametrize("kind", ["signing key", "public only"])
def test_only_a_storage_parent_with_its_private_part_protects(
        tpm: Tpm, client: TpmClient, parent: TpmObject, kind: str) -> None:
    """The protection itself refuses a parent that is no storage key (TPM_RC_TYPE), even
    when a caller did not check first."""
    if kind == "signing key":
        handle, _ = client.create_primary(TpmRh.OWNER, ak_template())
        not_storage = tpm.objects[handle]
    else:
        not_storage = replace(parent, sensitive=None)
    child, sensitive = _sealed(parent)
    blob = protection.wrap(parent, child.public, sensitive, IV)
    with pytest.raises(StatusError, match=r"^the parent is not a storage key") as refused:
        protection.wrap(not_storage, child.public, sensitive, IV)
    assert refused.value.code == TpmRc.TYPE
    with pytest.raises(StatusError, match=r"^the parent is not a storage key") as refused:
        protection.unwrap(not_storage, child.public, blob)
    assert refused.value.code == TpmRc.TYPE
