"""Sealing offline to a TPM's storage root key, checked without a TPM: the test plays
TPM2_Import itself (Part 1 §23.3.2.3, Annex C.6.1) with the SRK's private scalar — recovers the
seed from the ephemeral point, checks the outer HMAC over the duplicate and the object's Name,
decrypts the sensitive area — and pins the object the owner builds (a KEYEDHASH data object
usable only through its policy, neither fixedTPM nor fixedParent) and every refusal of an SRK
that is not an ECC storage key protecting its children with AES-CFB."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import replace

import pytest

from cvm.crypto.tpm_kdf import aes_cfb_decrypt, kdfa, kdfe, verify_hmac
from cvm.crypto.tpm_keys import ecc_generate, ecc_point, ecdh_x
from cvm.errors import IntegrityError, UsageError
from cvm.formats.tpm2.constants import TpmAlg, TpmaObject, TpmEccCurve
from cvm.formats.tpm2.public import EccParms, EccPoint, KeyedHashParms, Public, Scheme, SymDefObject
from cvm.formats.tpm2.sensitive import Sensitive
from cvm.image.offline_seal import ImportableSeal, seal_for_import, sealed_object
from cvm.vtpm.templates import srk_template

POLICY = hashlib.sha256(b"a PolicyPCR digest").digest()
SECRET = b"the volume key of a root the host never reads"
F = TpmaObject


def _sized(data: bytes) -> tuple[bytes, bytes]:
    size = int.from_bytes(data[:2], "big")
    return data[2:2 + size], data[2 + size:]


def _srk(curve: str = "p256", name_alg: int = TpmAlg.SHA256,
         key_bits: int = 128) -> tuple[bytes, Public]:
    scalar = ecc_generate(curve)
    x, y = ecc_point(curve, scalar)
    template = srk_template()
    parms = template.parameters
    assert isinstance(parms, EccParms)
    tpm_curve = TpmEccCurve.NIST_P256 if curve == "p256" else TpmEccCurve.NIST_P384
    parms = replace(parms, curve=tpm_curve, symmetric=SymDefObject.aes_cfb(key_bits))
    return scalar, Public(TpmAlg.ECC, name_alg, template.attributes, b"", parms, EccPoint(x, y))


def _import(curve: str, scalar: bytes, srk: Public, seal: ImportableSeal) -> Sensitive:
    """TPM2_Import's unwrapping of ``seal`` by the TPM that holds ``scalar``."""
    algorithm = {TpmAlg.SHA256: "sha256", TpmAlg.SHA384: "sha384"}[srk.name_alg]
    bits = hashlib.new(algorithm).digest_size * 8
    q_x, rest = _sized(seal.encrypted_seed)
    q_y, rest = _sized(rest)
    assert rest == b""
    assert isinstance(srk.unique, EccPoint) and isinstance(srk.parameters, EccParms)
    z = ecdh_x(curve, scalar, (q_x, q_y))
    seed = kdfe(algorithm, z, b"DUPLICATE", q_x, srk.unique.x, bits=bits)
    name = seal.public.name()
    integrity, encrypted = _sized(seal.duplicate)
    verify_hmac(algorithm, kdfa(algorithm, seed, b"INTEGRITY", b"", b"", bits=bits), integrity,
                encrypted, name)
    sym_key = kdfa(algorithm, seed, b"STORAGE", name, b"",
                   bits=srk.parameters.symmetric.key_bits)
    inner, rest = _sized(aes_cfb_decrypt(sym_key, bytes(16), encrypted))
    assert rest == b""
    return Sensitive.from_bytes(inner)


def _recording_random() -> tuple[Callable[[int], bytes], list[bytes]]:
    drawn: list[bytes] = []

    def random(size: int) -> bytes:
        drawn.append(os.urandom(size))
        return drawn[-1]
    return random, drawn


@pytest.mark.parametrize(("curve", "name_alg", "key_bits"), [
    ("p256", TpmAlg.SHA256, 128), ("p384", TpmAlg.SHA384, 256), ("p384", TpmAlg.SHA256, 128)])
def test_the_tpm_holding_the_srk_imports_the_secret(curve: str, name_alg: int,
                                                    key_bits: int) -> None:
    scalar, srk = _srk(curve, name_alg, key_bits)
    random, drawn = _recording_random()
    seal = seal_for_import(srk, SECRET, POLICY, random)
    sensitive = _import(curve, scalar, srk, seal)
    assert sensitive.sensitive_type == TpmAlg.KEYEDHASH
    assert sensitive.sensitive == SECRET and sensitive.auth_value == b""
    # The first draw is the object's seedValue (32 bytes), which the unique field commits to.
    assert len(drawn[0]) == 32 and sensitive.seed_value == drawn[0]
    assert seal.public.unique == hashlib.sha256(drawn[0] + SECRET).digest()
    assert SECRET not in seal.duplicate and drawn[0] not in seal.duplicate


def test_the_sealed_object_is_usable_only_through_its_policy() -> None:
    _, srk = _srk()
    public = seal_for_import(srk, SECRET, POLICY, os.urandom).public
    assert public.type == TpmAlg.KEYEDHASH and public.name_alg == TpmAlg.SHA256
    # adminWithPolicy and noDA only: no userWithAuth (the empty authValue opens nothing), and
    # no fixedTPM / fixedParent, which TPM2_Import refuses on a duplicated object.
    assert public.attributes == int(F.ADMIN_WITH_POLICY | F.NO_DA)
    assert public.auth_policy == POLICY
    assert public.parameters == KeyedHashParms(Scheme())
    assert isinstance(public.parameters, KeyedHashParms)
    assert public.parameters.scheme.scheme == TpmAlg.NULL


def test_another_tpm_cannot_import_it_and_a_changed_duplicate_fails_the_hmac() -> None:
    scalar, srk = _srk()
    seal = seal_for_import(srk, SECRET, POLICY, os.urandom)
    with pytest.raises(IntegrityError):
        _import("p256", ecc_generate("p256"), srk, seal)
    changed = bytearray(seal.duplicate)
    changed[-1] ^= 1
    with pytest.raises(IntegrityError):
        _import("p256", scalar, srk, replace(seal, duplicate=bytes(changed)))
    other = sealed_object(SECRET, hashlib.sha256(b"another policy").digest(), bytes(32))[0]
    with pytest.raises(IntegrityError):  # the HMAC covers the Name: no swapping the policy
        _import("p256", scalar, srk, replace(seal, public=other))


@pytest.mark.parametrize("size", [1, 128])
def test_a_secret_of_1_to_128_bytes_is_sealed(size: int) -> None:
    scalar, srk = _srk()
    secret = os.urandom(size)
    assert _import("p256", scalar, srk,
                   seal_for_import(srk, secret, POLICY, os.urandom)).sensitive == secret


@pytest.mark.parametrize("size", [0, 129])
def test_an_empty_or_oversized_secret_is_refused(size: int) -> None:
    _, srk = _srk()
    with pytest.raises(UsageError, match=r"^a sealed secret must be 1 to 128 bytes$"):
        seal_for_import(srk, bytes(size), POLICY, os.urandom)


def _refused(srk: Public, message: str) -> None:
    with pytest.raises(UsageError, match=f"^{message}$"):
        seal_for_import(srk, SECRET, POLICY, os.urandom)


def test_an_srk_that_is_not_an_ecc_p256_or_p384_key_is_refused() -> None:
    _, srk = _srk()
    message = r"the storage root key must be an ECC P-256 or P-384 key"
    _refused(srk_template("rsa").with_unique(bytes(256)), message)
    assert isinstance(srk.parameters, EccParms)
    _refused(replace(srk, parameters=replace(srk.parameters, curve=TpmEccCurve.NONE)), message)
    _refused(replace(srk, parameters=replace(srk.parameters, curve=0x0010)), message)


@pytest.mark.parametrize("dropped", [F.RESTRICTED, F.DECRYPT, F.RESTRICTED | F.DECRYPT])
def test_an_srk_that_is_not_a_restricted_decryption_key_is_refused(dropped: int) -> None:
    _, srk = _srk()
    _refused(replace(srk, attributes=srk.attributes & ~dropped),
             r"the storage root key is not a restricted decryption \(storage\) key")


@pytest.mark.parametrize("symmetric", [
    SymDefObject(), SymDefObject(TpmAlg.AES, 128, 0x0042),  # TPM_ALG_CBC
    SymDefObject(0x0013, 128, TpmAlg.CFB)])  # TPM_ALG_SM4
def test_an_srk_that_does_not_protect_with_aes_cfb_is_refused(symmetric: SymDefObject) -> None:
    _, srk = _srk()
    assert isinstance(srk.parameters, EccParms)
    _refused(replace(srk, parameters=replace(srk.parameters, symmetric=symmetric)),
             r"the storage root key does not protect its children with AES-CFB")
