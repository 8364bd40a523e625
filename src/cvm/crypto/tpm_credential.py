"""TPM credential protection: MakeCredential's output and ActivateCredential's unwrapping.

TCG "TPM 2.0 Library, Part 1: Architecture", revision 1.59, section 24 ("Credential
Protection") with Part 3 sections 12.5/12.6: a random seed is encrypted to the EK
(RSA-OAEP with the EK's nameAlg and the label "IDENTITY\\0"); ``symKey = KDFa(nameAlg, seed,
"STORAGE", Name(AK), ∅, EK.symmetric.keyBits)`` encrypts ``u16 size ‖ credential`` with
AES-CFB and a zero IV; ``HMAC(KDFa(nameAlg, seed, "INTEGRITY", ∅, ∅, digest bits), encIdentity
‖ Name(AK))`` protects it. The TPM2B_ID_OBJECT is ``TPM2B integrityHMAC ‖ encIdentity``.
For an ECC EK (Part 1 section C.6.4, "ECC Secret Sharing for Credentials"): an ephemeral key
pair (d_e, Q_e), ``Z = x(d_e · EK)`` and ``seed = KDFe(nameAlg, Z, "IDENTITY", x(Q_e), x(EK),
digest bits)``; the encrypted secret is the TPMS_ECC_POINT Q_e. A verifier runs
:func:`make_credential` (no TPM needed); the TPM holding both keys runs
:func:`activate_credential`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cvm.crypto.tpm_kdf import (
    aes_cfb_decrypt,
    aes_cfb_encrypt,
    hmac,
    kdfa,
    kdfe,
    verify_hmac,
)
from cvm.crypto.tpm_keys import ecc_from_seed, ecc_point, ecdh_x, rsa_oaep_encrypt
from cvm.errors import IntegrityError

IDENTITY_LABEL = b"IDENTITY\x00"
ZERO_IV = bytes(16)


def _sized(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _keys(hash_name: str, seed: bytes, name: bytes, sym_bits: int) -> tuple[bytes, bytes]:
    size = hashlib.new(hash_name).digest_size
    return (kdfa(hash_name, seed, b"STORAGE", name, b"", bits=sym_bits),
            kdfa(hash_name, seed, b"INTEGRITY", b"", b"", bits=size * 8))


def make_credential(ek_modulus: bytes, ek_exponent: int, hash_name: str, sym_bits: int,
                    object_name: bytes, credential: bytes,
                    random: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """(TPM2B_ID_OBJECT buffer, encrypted secret) binding ``credential`` to ``object_name``."""
    seed, secret = share_secret_rsa(ek_modulus, ek_exponent, hash_name, IDENTITY_LABEL, random)
    sym_key, hmac_key = _keys(hash_name, seed, object_name, sym_bits)
    enc_identity = aes_cfb_encrypt(sym_key, ZERO_IV, _sized(credential))
    integrity = hmac(hash_name, hmac_key, enc_identity, object_name)
    return _sized(integrity) + enc_identity, secret


def share_secret_ecc(curve: str, peer: tuple[bytes, bytes], hash_name: str, label: bytes,
                     random: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """ECC secret sharing (Part 1 Annex C.6.1): (secret, TPMS_ECC_POINT of the ephemeral key)
    with ``secret = KDFe(hash, x(d_e · peer), label, x(Q_e), x(peer), digest bits)``."""
    scalar = ecc_from_seed(curve, random(32), b"ephemeral key")
    q_x, q_y = ecc_point(curve, scalar)
    size = hashlib.new(hash_name).digest_size
    secret = kdfe(hash_name, ecdh_x(curve, scalar, peer), label, q_x, peer[0], bits=size * 8)
    return secret, _sized(q_x) + _sized(q_y)


def share_secret_rsa(modulus: bytes, exponent: int, hash_name: str, label: bytes,
                     random: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """RSA secret sharing: (random secret of digest size, its RSA-OAEP encryption)."""
    secret = random(hashlib.new(hash_name).digest_size)
    return secret, rsa_oaep_encrypt(modulus, exponent, secret, hash_name=hash_name,
                                    label=label)


def make_credential_ecc(curve: str, ek_point: tuple[bytes, bytes], hash_name: str,
                        sym_bits: int, object_name: bytes, credential: bytes,
                        random: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """As :func:`make_credential` for an ECC EK; the secret is TPMS_ECC_POINT Q_e."""
    seed, point = share_secret_ecc(curve, ek_point, hash_name, IDENTITY_LABEL, random)
    sym_key, hmac_key = _keys(hash_name, seed, object_name, sym_bits)
    enc_identity = aes_cfb_encrypt(sym_key, ZERO_IV, _sized(credential))
    integrity = hmac(hash_name, hmac_key, enc_identity, object_name)
    return _sized(integrity) + enc_identity, point


def activate_credential(seed: bytes, hash_name: str, sym_bits: int, object_name: bytes,
                        id_object: bytes) -> bytes:
    """The credential inside ``id_object`` (IntegrityError if it is not for ``object_name``)."""
    size = int.from_bytes(id_object[:2], "big")
    if len(id_object) < 2 + size + 2:
        raise IntegrityError("credential blob is too short")
    integrity, enc_identity = id_object[2 : 2 + size], id_object[2 + size :]
    sym_key, hmac_key = _keys(hash_name, seed, object_name, sym_bits)
    verify_hmac(hash_name, hmac_key, integrity, enc_identity, object_name)
    plain = aes_cfb_decrypt(sym_key, ZERO_IV, enc_identity)
    length = int.from_bytes(plain[:2], "big")
    if length != len(plain) - 2:
        raise IntegrityError("credential does not decrypt to a TPM2B_DIGEST")
    return plain[2:]
