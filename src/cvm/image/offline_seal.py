"""Sealing a secret to a TPM the owner has never touched: a duplicate for TPM2_Import.

The owner knows only the public part of the target TPM's storage root key (the ECC P-256 SRK
that ``systemd-tpm2-setup`` publishes, or that ``tpm2_createprimary`` + ``tpm2_readpublic``
report) and the PCR values it predicted. It builds a sealed data object (KEYEDHASH, scheme
NULL, authorised only by the PCR policy) and wraps its sensitive area for that SRK, exactly as
TPM2_Duplicate would with no inner wrapper (TCG TPM 2.0 Library Part 1, rev 1.59, §23.3.2.3
"Duplication" and Annex C.6.1 for the ECC seed):

* ``seed = KDFe(nameAlg, x(d_e·Q_srk), "DUPLICATE", x(Q_e), x(Q_srk), digest bits)``, and the
  encrypted seed TPM2B_ENCRYPTED_SECRET is the ephemeral point ``Q_e`` (TPMS_ECC_POINT);
* ``symKey = KDFa(nameAlg, seed, "STORAGE", Name(object), ∅, 128)``;
  ``dupSensitive = AES-128-CFB(symKey, IV = 0, TPM2B_SENSITIVE)``;
* ``hmacKey = KDFa(nameAlg, seed, "INTEGRITY", ∅, ∅, digest bits)``;
  ``duplicate = TPM2B(HMAC(hmacKey, dupSensitive ‖ Name(object))) ‖ dupSensitive``.

The TPM then runs TPM2_Import (which requires fixedTPM and fixedParent CLEAR on a duplicated
object), TPM2_Load, and TPM2_Unseal in a policy session — only if the PCRs are the predicted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cvm.crypto.tpm_credential import share_secret_ecc
from cvm.crypto.tpm_kdf import aes_cfb_encrypt, hmac, kdfa
from cvm.errors import UsageError
from cvm.formats.tpm2.constants import TpmAlg, TpmaObject, TpmEccCurve, hash_name
from cvm.formats.tpm2.public import EccParms, EccPoint, KeyedHashParms, Public, Scheme
from cvm.formats.tpm2.sensitive import Sensitive
from cvm.formats.tpm2.tpm2b import tpm2b

DUPLICATE_LABEL = b"DUPLICATE\x00"
ZERO_IV = bytes(16)
SEED_VALUE_SIZE = 32
CURVE_NAMES = {TpmEccCurve.NIST_P256: "p256", TpmEccCurve.NIST_P384: "p384"}


@dataclass(frozen=True)
class ImportableSeal:
    """What the target TPM imports: the object's public area, its duplicate, the seed."""

    public: Public
    duplicate: bytes  # TPM2B_PRIVATE buffer
    encrypted_seed: bytes  # TPM2B_ENCRYPTED_SECRET buffer (a TPMS_ECC_POINT)


def sealed_object(secret: bytes, policy: bytes, seed_value: bytes) -> tuple[Public, Sensitive]:
    """A KEYEDHASH data object usable only through ``policy`` (no fixedTPM/fixedParent)."""
    if not 0 < len(secret) <= 128:
        raise UsageError("a sealed secret must be 1 to 128 bytes")
    attributes = int(TpmaObject.ADMIN_WITH_POLICY | TpmaObject.NO_DA)
    unique = hashlib.sha256(seed_value + secret).digest()
    public = Public(TpmAlg.KEYEDHASH, TpmAlg.SHA256, attributes, policy,
                    KeyedHashParms(Scheme()), unique)
    return public, Sensitive(TpmAlg.KEYEDHASH, b"", seed_value, secret)


def seal_for_import(srk: Public, secret: bytes, policy: bytes,
                    random: Callable[[int], bytes]) -> ImportableSeal:
    """Seal ``secret`` under ``policy`` for the TPM whose storage root key is ``srk``."""
    parms = srk.parameters
    if (srk.type != TpmAlg.ECC or not isinstance(parms, EccParms)
            or not isinstance(srk.unique, EccPoint) or parms.curve not in CURVE_NAMES):
        raise UsageError("the storage root key must be an ECC P-256 or P-384 key")
    if not srk.attributes & TpmaObject.RESTRICTED or not srk.attributes & TpmaObject.DECRYPT:
        raise UsageError("the storage root key is not a restricted decryption (storage) key")
    if parms.symmetric.algorithm != TpmAlg.AES or parms.symmetric.mode != TpmAlg.CFB:
        raise UsageError("the storage root key does not protect its children with AES-CFB")
    algorithm = hash_name(srk.name_alg)
    public, sensitive = sealed_object(secret, policy, random(SEED_VALUE_SIZE))
    seed, point = share_secret_ecc(CURVE_NAMES[TpmEccCurve(parms.curve)],
                                   (srk.unique.x, srk.unique.y), algorithm, DUPLICATE_LABEL,
                                   random)
    name = public.name()
    sym_key = kdfa(algorithm, seed, b"STORAGE", name, b"", bits=parms.symmetric.key_bits)
    hmac_key = kdfa(algorithm, seed, b"INTEGRITY", b"", b"",
                    bits=hashlib.new(algorithm).digest_size * 8)
    encrypted = aes_cfb_encrypt(sym_key, ZERO_IV, tpm2b(sensitive.to_bytes()))
    integrity = hmac(algorithm, hmac_key, encrypted, name)
    return ImportableSeal(public, tpm2b(integrity) + encrypted, point)
