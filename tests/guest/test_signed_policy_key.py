"""A signed PCR policy names its key as systemd does, and only that key's entries are used.

systemd fingerprints the key of a ``.pcrsig`` entry (``pkfp``) as SHA-256 of OpenSSL's
``i2d_PublicKey`` form — PKCS#1 ``RSAPublicKey`` for RSA — and skips the entries of any other
key when it picks the signature for a token (the real tools' agreement is in
``tests/interop/test_systemd_signed_policy.py``). A token sealed to a signed policy and no
literal PCR has PolicyAuthorize alone in its policy.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import pytest
from asn1crypto.keys import PublicKeyInfo, RSAPublicKey

from cvm.crypto.tpm_keys import load_public_pem, public_key_fingerprint, public_key_pem
from cvm.crypto.x509_edk2 import generate_rsa_key, sign_message
from cvm.errors import FormatError, UsageError
from cvm.formats.initramfs import InitramfsManifest
from cvm.formats.pcr_signature import PcrSignatureEntry, pcr_signature_bytes
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.tpm2.constants import TpmAlg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.sealed_blob import SealedBlob
from cvm.formats.tpm2.signature import Signature
from cvm.guest.boot.initramfs import Initramfs
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.luks_token import SystemdTpm2Token, signed_policy
from cvm.guest.tpm.seal import SealPolicy, SignedPolicy, seal, unseal
from cvm.vtpm.engine import Tpm
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.templates import public_from_pem

PCR11 = PcrSelectionList.of("sha256", [11])


def _rsa_pem() -> tuple[Any, bytes]:
    key = generate_rsa_key()
    numbers = key.public_key().public_numbers()
    return key, public_key_pem("rsa", numbers.n.to_bytes(256, "big"), numbers.e)


def test_the_fingerprint_is_sha256_of_the_pkcs1_public_key() -> None:
    _, pem = _rsa_pem()
    _, modulus, exponent, _ = load_public_pem(pem)
    pkcs1 = RSAPublicKey({"modulus": int.from_bytes(modulus), "public_exponent": exponent})
    assert public_key_fingerprint(pem) == hashlib.sha256(pkcs1.dump()).digest()
    spki = PublicKeyInfo.load(base64.b64decode(b"".join(pem.strip().splitlines()[1:-1])))
    assert public_key_fingerprint(pem) != hashlib.sha256(spki.dump()).digest()


def test_an_ecc_key_is_fingerprinted_by_its_uncompressed_point() -> None:
    # the generator of P-256
    x = bytes.fromhex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296")
    y = bytes.fromhex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")
    pem = public_key_pem("ecc", x, y, "p256")
    assert public_key_fingerprint(pem) == hashlib.sha256(b"\x04" + x + y).digest()


def test_a_fingerprint_needs_a_public_key() -> None:
    with pytest.raises(FormatError, match="not a PEM public key"):
        public_key_fingerprint(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def _initramfs(entries: tuple[PcrSignatureEntry, ...]) -> Initramfs:
    """An initramfs at its signed-policy step: a fresh vTPM (PCR 11 all zeros) and a UKI whose
    ``.pcrsig`` holds ``entries``."""
    client = TpmClient(Tpm().execute)
    client.startup()
    uki = build_pe([SectionSpec(".text", b"\xc3", CODE),
                    SectionSpec(".pcrsig", pcr_signature_bytes(entries))])
    initramfs = Initramfs(None, client, None, b"", uki, 0, 0, os.urandom)  # type: ignore[arg-type]
    initramfs.manifest = InitramfsManifest("uuid", "guid", pcr_signature="uki:.pcrsig")
    return initramfs


def _token(pem: bytes) -> SystemdTpm2Token:
    """A token bound to ``pem``'s signed PCR 11 (its sealed blob is not used here)."""
    blob = SealedBlob(None, public_from_pem(pem))  # type: ignore[arg-type]
    return SystemdTpm2Token((1,), blob, (), bytes(32), "sha256", "ecc", False, pem, (11,))


def _entry(key: Any, pem: bytes) -> PcrSignatureEntry:
    policy = PolicyDigest.start().pcr(PCR11, [bytes(32)]).value
    return PcrSignatureEntry("sha256", (11,), public_key_fingerprint(pem), policy,
                             sign_message(key, policy, "sha256"))


def test_the_initramfs_uses_the_entry_of_the_tokens_key_only() -> None:
    key, pem = _rsa_pem()
    other_key, other_pem = _rsa_pem()
    theirs = _entry(other_key, other_pem)
    with pytest.raises(FormatError, match=r"\.pcrsig: no signed policy for the token's key"):
        _initramfs((theirs,))._signed_policy(_token(pem))
    ours = _entry(key, pem)  # listed after the other key's entry for the same policy
    signed = _initramfs((theirs, ours))._signed_policy(_token(pem))
    assert signed is not None
    assert (signed.approved_policy, signed.signature.sig) == (ours.policy, ours.signature)
    assert signed.signer == public_from_pem(pem)


def test_a_token_without_a_key_takes_no_signed_policy() -> None:
    key, pem = _rsa_pem()
    literal = SystemdTpm2Token((1,), _token(pem).blob, (7,), bytes(32))
    document = pcr_signature_bytes((_entry(key, pem),))
    with pytest.raises(UsageError) as caught:
        signed_policy(literal, document, TpmClient(Tpm().execute), "sig.json")
    assert str(caught.value) == "the token has no public key: it needs no signed policy"


def test_a_signed_policy_alone_has_no_policy_pcr() -> None:
    _, pem = _rsa_pem()
    signer = public_from_pem(pem)
    alone = SealPolicy(PcrSelectionList.of("sha256", []), False, signer)
    assert alone.digest([]) == PolicyDigest.start().authorize(signer.name())
    with_pcr7 = SealPolicy(PcrSelectionList.of("sha256", [7]), False, signer)
    assert with_pcr7.digest([bytes(32)]) == PolicyDigest.start().authorize(
        signer.name()).pcr(PcrSelectionList.of("sha256", [7]), [bytes(32)])


def test_a_secret_sealed_to_a_signed_policy_alone_unseals_with_its_signature() -> None:
    key, pem = _rsa_pem()
    client = TpmClient(Tpm().execute)
    client.startup()
    signer = public_from_pem(pem)
    policy = SealPolicy(PcrSelectionList.of("sha256", []), False, signer)
    blob = seal(client, b"k" * 32, policy.digest([]).value)
    entry = _entry(key, pem)
    signed = SignedPolicy(signer, PCR11, entry.policy,
                          Signature(TpmAlg.RSASSA, TpmAlg.SHA256, sig=entry.signature))
    assert unseal(client, blob, policy, signed=signed) == b"k" * 32
