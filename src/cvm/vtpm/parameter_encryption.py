"""Salted sessions and session-based parameter encryption (AES-CFB).

TCG "TPM 2.0 Library, Part 1", revision 1.59:

* section 19.6.12 / 19.6.13 (salted sessions): with an RSA ``tpmKey`` the salt is
  RSA-OAEP-decrypted with the key's nameAlg and the label "SECRET\\0"; with an ECC ``tpmKey`` the
  caller sends an ephemeral point Q and ``salt = KDFe(nameAlg, x(d·Q), "SECRET", x(Q),
  x(tpmKey), digest bits)`` (Part 1 Annex C.6.1);
* section 21 (session-based encryption): a session with ``decrypt`` set encrypts the first
  command parameter, one with ``encrypt`` the first response parameter, both only when that
  parameter is a TPM2B (only its buffer, not its size). For AES-CFB (section 21.3), ``key ‖ IV
  = KDFa(sessionAlg, sessionValue, "CFB", nonceNewer, nonceOlder, keyBits + 128)`` with
  ``sessionValue = sessionKey ‖ authValue`` (the authValue only for a session that also
  authorizes the entity); for a command the newer nonce is nonceCaller, for a response
  nonceTPM.

The command sets below are those of Part 3 whose first command (resp. response) parameter is
a TPM2B.
"""

from __future__ import annotations

from collections.abc import Callable

from cvm.crypto.tpm_credential import share_secret_ecc, share_secret_rsa
from cvm.crypto.tpm_kdf import aes_cfb_decrypt, aes_cfb_encrypt, kdfa
from cvm.errors import UsageError
from cvm.formats.tpm2.constants import TpmCc, TpmEccCurve, hash_name
from cvm.formats.tpm2.public import EccParms, EccPoint, Public, RsaParms
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.vtpm.tpm_object import CURVE_NAMES, TpmObject, fail, recover_secret

SECRET_LABEL = b"SECRET\x00"
DECRYPT_COMMANDS = frozenset({
    TpmCc.CREATE_PRIMARY, TpmCc.CREATE, TpmCc.LOAD, TpmCc.LOAD_EXTERNAL,
    TpmCc.START_AUTH_SESSION, TpmCc.POLICY_PCR, TpmCc.POLICY_AUTHORIZE, TpmCc.POLICY_SECRET,
    TpmCc.VERIFY_SIGNATURE, TpmCc.QUOTE, TpmCc.SIGN, TpmCc.PCR_EVENT, TpmCc.NV_DEFINE_SPACE,
    TpmCc.NV_WRITE, TpmCc.NV_EXTEND, TpmCc.HIERARCHY_CHANGE_AUTH, TpmCc.MAKE_CREDENTIAL,
    TpmCc.ACTIVATE_CREDENTIAL, TpmCc.HASH_SEQUENCE_START, TpmCc.HMAC_START,
    TpmCc.SEQUENCE_UPDATE, TpmCc.SEQUENCE_COMPLETE, TpmCc.EVENT_SEQUENCE_COMPLETE,
})
ENCRYPT_COMMANDS = frozenset({
    TpmCc.CREATE_PRIMARY, TpmCc.CREATE, TpmCc.LOAD, TpmCc.LOAD_EXTERNAL, TpmCc.READ_PUBLIC,
    TpmCc.UNSEAL, TpmCc.START_AUTH_SESSION, TpmCc.POLICY_SECRET, TpmCc.POLICY_GET_DIGEST,
    TpmCc.QUOTE, TpmCc.GET_RANDOM, TpmCc.NV_READ, TpmCc.NV_READ_PUBLIC, TpmCc.MAKE_CREDENTIAL,
    TpmCc.ACTIVATE_CREDENTIAL, TpmCc.SEQUENCE_COMPLETE,
})


def session_salt(tpm_key: TpmObject, encrypted_salt: bytes) -> bytes:
    """The salt of a session started with ``tpm_key`` (TPM_RC_VALUE, parameter 2, if bad)."""
    parms = tpm_key.public.parameters
    if tpm_key.sensitive is None or not isinstance(parms, RsaParms | EccParms):
        raise fail(for_handle(TpmRc.KEY, 1), "tpmKey is not an asymmetric key with a private part")
    bad = fail(for_parameter(TpmRc.VALUE, 2), "encryptedSalt does not decrypt")
    return recover_secret(tpm_key, encrypted_salt, SECRET_LABEL, bad)


def make_salt(tpm_key: Public, random: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """The caller's side of :func:`session_salt`: (salt, encryptedSalt) for ``tpm_key``."""
    parms = tpm_key.parameters
    algorithm = hash_name(tpm_key.name_alg)
    if isinstance(parms, RsaParms) and isinstance(tpm_key.unique, bytes):
        return share_secret_rsa(tpm_key.unique, parms.exponent, algorithm, SECRET_LABEL, random)
    if isinstance(parms, EccParms) and isinstance(tpm_key.unique, EccPoint):
        point = (tpm_key.unique.x, tpm_key.unique.y)
        curve = CURVE_NAMES[TpmEccCurve(parms.curve)]
        return share_secret_ecc(curve, point, algorithm, SECRET_LABEL, random)
    raise UsageError("a session can be salted only to an RSA or ECC key")


def cfb_crypt(parameters: bytes, auth_hash: int, key_bits: int, session_value: bytes,
              nonce_newer: bytes, nonce_older: bytes, *, encrypt: bool) -> bytes:
    """Encrypt or decrypt the buffer of the first TPM2B of ``parameters``."""
    if len(parameters) < 2:
        raise fail(for_parameter(TpmRc.SIZE, 1), "no TPM2B parameter to decrypt")
    size = int.from_bytes(parameters[:2], "big")
    if size + 2 > len(parameters):
        raise fail(for_parameter(TpmRc.SIZE, 1), "first parameter is truncated")
    material = kdfa(hash_name(auth_hash), session_value, b"CFB", nonce_newer, nonce_older,
                    bits=key_bits + 128)
    key, iv = material[: key_bits // 8], material[key_bits // 8 :]
    buffer = parameters[2 : 2 + size]
    converted = aes_cfb_encrypt(key, iv, buffer) if encrypt else aes_cfb_decrypt(key, iv, buffer)
    return parameters[:2] + converted + parameters[2 + size :]
