"""Quote, Sign, MakeCredential and ActivateCredential.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59: 18.4 (TPM2_Quote: TPMS_ATTEST of
type TPM_ST_ATTEST_QUOTE with ``pcrDigest = H_scheme(selected PCR values)``, signed over
``H_scheme(TPMS_ATTEST)``), 20.2 (TPM2_Sign, which refuses a restricted key without a
TPMT_TK_HASHCHECK ticket) and 12.5/12.6 (TPM2_ActivateCredential / TPM2_MakeCredential with
an RSA storage key, Part 1 section 24, :mod:`cvm.crypto.tpm_credential`). Part 3 section
18.2.2 and the reference ``Attest_spt.c`` ``FillInAttestInfo``: when the signing key is in
neither the endorsement nor the platform hierarchy, resetCount, restartCount and
firmwareVersion are obfuscated with ``KDFa(SHA-256, shProof, "OBFUSCATE", qualifiedSigner, ∅,
128)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cvm.crypto import tpm_credential
from cvm.crypto.tpm_kdf import kdfa
from cvm.errors import IntegrityError
from cvm.formats.tpm2.attest import ClockInfo, QuoteAttest
from cvm.formats.tpm2.constants import (
    TpmaObject,
    TpmCc,
    TpmEccCurve,
    TpmRh,
    digest,
    digest_size,
    hash_name,
)
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import EccParms, EccPoint, RsaParms
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.signature import SigScheme, Ticket
from cvm.formats.tpm2.tpm2b import read_tpm2b, tpm2b
from cvm.vtpm.dispatch import AuthRole, Call, Result, register
from cvm.vtpm.hash_commands import is_hash_check
from cvm.vtpm.tpm_object import (
    CURVE_NAMES,
    TpmObject,
    fail,
    pick_scheme,
    recover_secret,
    sign_digest,
)

if TYPE_CHECKING:
    from cvm.vtpm.engine import Tpm

FIRMWARE_VERSION = 0x0001_0000_2026_0001


def _signing_key(tpm: Tpm, call: Call) -> TpmObject:
    key = tpm.lookup(call.handles[0], 1)
    if not key.has(TpmaObject.SIGN_ENCRYPT) or key.sensitive is None:
        raise fail(for_handle(TpmRc.KEY, 1), "not a signing key with a private part")
    return key


def quote(tpm: Tpm, call: Call) -> Result:
    qualifying = read_tpm2b(call.params, "qualifyingData", 64)
    requested = SigScheme.read(call.parameter(2))
    selection = PcrSelectionList.read(call.parameter(3))
    call.done()
    key = _signing_key(tpm, call)
    scheme, hash_alg = pick_scheme(key, (requested.scheme, requested.hash_alg))
    for entry in selection.selections:
        if entry.hash_alg not in tpm.pcrs.values or any(p >= 24 for p in entry.pcrs):
            raise fail(for_parameter(TpmRc.VALUE, 3), "selection names an unallocated PCR")
    reset, restart, firmware = tpm.state.reset_count, tpm.state.restart_count, FIRMWARE_VERSION
    if key.hierarchy not in (TpmRh.ENDORSEMENT, TpmRh.PLATFORM):
        mask = kdfa("sha256", tpm.proof(TpmRh.OWNER), b"OBFUSCATE", key.qualified_name, b"",
                    bits=128)
        firmware = (firmware + int.from_bytes(mask[:8], "big")) & (2**64 - 1)
        second = int.from_bytes(mask[8:], "big")
        reset = (reset + (second >> 32)) & 0xFFFFFFFF
        restart = (restart + second) & 0xFFFFFFFF
    attest = QuoteAttest(
        key.qualified_name, qualifying, ClockInfo(tpm.now_ms(), reset, restart, True),
        firmware, selection, tpm.pcrs.current_digest(hash_alg, selection),
    )
    body = attest.to_bytes()
    signature = sign_digest(key, scheme, hash_alg, digest(hash_alg, body))
    return Result(parameters=tpm2b(body) + signature.to_bytes())


def sign(tpm: Tpm, call: Call) -> Result:
    value = read_tpm2b(call.params, "digest", 64)
    requested = SigScheme.read(call.parameter(2))
    ticket = Ticket.read(call.parameter(3))
    call.done()
    key = _signing_key(tpm, call)
    scheme, hash_alg = pick_scheme(key, (requested.scheme, requested.hash_alg))
    if len(value) != digest_size(hash_alg):
        raise fail(for_parameter(TpmRc.SIZE, 1), "digest size differs from the scheme hash")
    if key.has(TpmaObject.RESTRICTED) and not is_hash_check(tpm, ticket, value):
        raise fail(for_parameter(TpmRc.TICKET, 3), "a restricted key signs only a digest this "
                   "TPM computed (TPM2_Hash's ticket)")
    return Result(parameters=sign_digest(key, scheme, hash_alg, value).to_bytes())


def _credential_key(tpm: Tpm, handle: int, number: int) -> tuple[TpmObject, RsaParms | EccParms]:
    key = tpm.lookup(handle, number)
    parms = key.public.parameters
    if not isinstance(parms, RsaParms | EccParms) or not (
        key.has(TpmaObject.RESTRICTED) and key.has(TpmaObject.DECRYPT)
    ):
        raise fail(for_handle(TpmRc.TYPE, number), "credentials need a storage key (an EK)")
    return key, parms


def _seed(key: TpmObject, secret: bytes) -> bytes:
    """Recover the credential seed from the encrypted secret (RSA-OAEP or ECDH + KDFe)."""
    bad = fail(for_parameter(TpmRc.VALUE, 2), "secret does not decrypt")
    return recover_secret(key, secret, tpm_credential.IDENTITY_LABEL, bad)


def activate_credential(tpm: Tpm, call: Call) -> Result:
    blob = read_tpm2b(call.params, "credentialBlob")
    secret = read_tpm2b(call.parameter(2), "secret")
    call.done()
    activate = tpm.lookup(call.handles[0], 1)
    key, parms = _credential_key(tpm, call.handles[1], 2)
    if key.sensitive is None:
        raise fail(for_handle(TpmRc.KEY, 2), "the key has no private part")
    seed = _seed(key, secret)
    try:
        credential = tpm_credential.activate_credential(
            seed, hash_name(key.public.name_alg), parms.symmetric.key_bits, activate.name, blob)
    except IntegrityError:
        raise fail(for_parameter(TpmRc.INTEGRITY, 1), "credential is not for this object") from None
    return Result(parameters=tpm2b(credential))


def make_credential(tpm: Tpm, call: Call) -> Result:
    credential = read_tpm2b(call.params, "credential", 64)
    name = read_tpm2b(call.parameter(2), "objectName", 66)
    call.done()
    key, parms = _credential_key(tpm, call.handles[0], 1)
    if len(credential) > digest_size(key.public.name_alg):  # Part 3 12.6: at most a digest
        raise fail(for_parameter(TpmRc.SIZE, 1), f"a credential of {len(credential)} bytes is "
                   "larger than a digest of the key's nameAlg")
    algorithm = hash_name(key.public.name_alg)
    bits = parms.symmetric.key_bits
    if isinstance(parms, RsaParms):
        assert isinstance(key.public.unique, bytes)
        blob, secret = tpm_credential.make_credential(
            key.public.unique, parms.exponent, algorithm, bits, name, credential, tpm.random)
    else:
        assert isinstance(key.public.unique, EccPoint)
        point = (key.public.unique.x, key.public.unique.y)
        blob, secret = tpm_credential.make_credential_ecc(
            CURVE_NAMES[TpmEccCurve(parms.curve)], point, algorithm, bits, name, credential,
            tpm.random)
    return Result(parameters=tpm2b(blob) + tpm2b(secret))


# This module's rows of the command table (Part 3: handles, authorization roles,
# response handles), registered explicitly so each handler stays a plain function.
register(TpmCc.QUOTE, quote, handles=1, auth=(AuthRole.USER,))
register(TpmCc.SIGN, sign, handles=1, auth=(AuthRole.USER,))
register(TpmCc.ACTIVATE_CREDENTIAL, activate_credential,
         handles=2, auth=(AuthRole.ADMIN, AuthRole.USER))
register(TpmCc.MAKE_CREDENTIAL, make_credential, handles=1)
