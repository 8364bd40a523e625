"""Protection of an object's private area under its storage parent (TPM2B_PRIVATE).

TCG "TPM 2.0 Library, Part 1", revision 1.59, section 23.3 ("Symmetric Encryption of
Sensitive Area") and section 23.4 ("Integrity"), as the reference TPM's ``Object_spt.c``
(``SensitiveToPrivate`` / ``PrivateToSensitive``) implements them:

* ``symKey = KDFa(parent.nameAlg, parent.seedValue, "STORAGE", Name(child), ∅,
  parent.symmetric.keyBits)``; ``IV`` random, one AES block, stored in clear;
* ``encrypted = AES-CFB(symKey, IV, u16 size ‖ TPMT_SENSITIVE)`` with the authValue zero-padded
  to the child's nameAlg digest size;
* ``hmacKey = KDFa(parent.nameAlg, parent.seedValue, "INTEGRITY", ∅, ∅, digest bits)``;
  ``integrity = HMAC(hmacKey, TPM2B(IV) ‖ encrypted ‖ Name(child))``.

Loading checks the HMAC first (TPM_RC_INTEGRITY), then decrypts and parses.
"""

from __future__ import annotations

from dataclasses import replace

from cvm.crypto.tpm_kdf import aes_cfb_decrypt, aes_cfb_encrypt, hmac, kdfa, verify_hmac
from cvm.errors import FormatError, IntegrityError
from cvm.formats.tpm2.constants import digest_size, hash_name
from cvm.formats.tpm2.public import EccParms, Public, RsaParms
from cvm.formats.tpm2.response_code import TpmRc, for_parameter
from cvm.formats.tpm2.sensitive import PrivateBlob, Sensitive
from cvm.formats.tpm2.tpm2b import parse_tpm2b, tpm2b
from cvm.vtpm.tpm_object import TpmObject, fail

IV_SIZE = 16


def _keys(parent: TpmObject, child_name: bytes) -> tuple[str, bytes, bytes]:
    if not parent.is_storage_parent or parent.sensitive is None:
        raise fail(TpmRc.TYPE, "the parent is not a storage key")
    parms = parent.public.parameters
    assert isinstance(parms, RsaParms | EccParms)
    algorithm = hash_name(parent.public.name_alg)
    seed = parent.sensitive.seed_value
    sym_key = kdfa(algorithm, seed, b"STORAGE", child_name, b"",
                   bits=parms.symmetric.key_bits)
    hmac_key = kdfa(algorithm, seed, b"INTEGRITY", b"", b"",
                    bits=digest_size(parent.public.name_alg) * 8)
    return algorithm, sym_key, hmac_key


def wrap(parent: TpmObject, public: Public, sensitive: Sensitive, iv: bytes) -> PrivateBlob:
    """Protect ``sensitive`` of the object ``public`` under ``parent``."""
    name = public.name()
    algorithm, sym_key, hmac_key = _keys(parent, name)
    padded = sensitive.auth_value.ljust(digest_size(public.name_alg), b"\x00")
    plain = tpm2b(replace(sensitive, auth_value=padded).to_bytes())
    encrypted = aes_cfb_encrypt(sym_key, iv, plain)
    integrity = hmac(algorithm, hmac_key, tpm2b(iv), encrypted, name)
    return PrivateBlob(integrity, iv, encrypted)


def unwrap(parent: TpmObject, public: Public, blob: PrivateBlob) -> Sensitive:
    """Check and decrypt a private blob; TPM_RC_INTEGRITY (parameter 1) if it was altered."""
    name = public.name()
    algorithm, sym_key, hmac_key = _keys(parent, name)
    try:
        verify_hmac(algorithm, hmac_key, blob.integrity, blob.integrity_region(), name)
    except IntegrityError:
        raise fail(for_parameter(TpmRc.INTEGRITY, 1), "private area integrity failed") from None
    if len(blob.iv) != IV_SIZE:
        raise fail(for_parameter(TpmRc.VALUE, 1), "private area IV is not one AES block")
    plain = aes_cfb_decrypt(sym_key, blob.iv, blob.encrypted)
    try:
        return Sensitive.from_bytes(parse_tpm2b(plain, "TPM2B_SENSITIVE"))
    except FormatError:
        raise fail(TpmRc.SENSITIVE, "private area does not decrypt") from None
