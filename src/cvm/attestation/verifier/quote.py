"""Verifying a vTPM quote (is it authentic?) and what it quotes.

TPM 2.0 Library Part 3 (rev 1.59) section 18.4 TPM2_Quote: the AK signs TPMS_ATTEST (Part 2
section 10.12.12, type TPM_ST_ATTEST_QUOTE) with its own scheme. The verifier checks that:

* the AK is an attestation key: a restricted signing key created inside the TPM (fixedTPM,
  fixedParent, sensitiveDataOrigin, restricted, sign, not decrypt) — so the TPM signed only
  digests it produced itself (a restricted key refuses to sign a TPMS_ATTEST lookalike);
* the signature over SHA-256/384 of the TPMS_ATTEST verifies under the AK (ECDSA or RSASSA/PSS);
* the quote selects one bank; its ``extraData`` is checked by the caller against the runtime
  digest (``qualifiedSigner`` depends on the AK's hierarchy and is not relied on).
"""

from __future__ import annotations

import hashlib

from cvm.crypto import tpm_keys
from cvm.errors import FormatError, SignatureError
from cvm.formats.tpm2.attest import QuoteAttest
from cvm.formats.tpm2.constants import TpmAlg, TpmaObject, TpmEccCurve, hash_name
from cvm.formats.tpm2.public import EccParms, EccPoint, Public, RsaParms
from cvm.formats.tpm2.signature import Signature

AK_REQUIRED = (TpmaObject.FIXED_TPM | TpmaObject.FIXED_PARENT | TpmaObject.SENSITIVE_DATA_ORIGIN
               | TpmaObject.RESTRICTED | TpmaObject.SIGN_ENCRYPT)
_CURVES = {TpmEccCurve.NIST_P256: "p256", TpmEccCurve.NIST_P384: "p384"}


def check_attestation_key(ak: Public) -> None:
    """Raise SignatureError unless ``ak`` is a TPM-resident restricted signing key."""
    missing = [flag.name or str(flag) for flag in TpmaObject
               if flag & AK_REQUIRED and not ak.attributes & flag]
    if missing:
        raise SignatureError(f"the AK is not an attestation key (lacks {', '.join(missing)})")
    if ak.attributes & TpmaObject.DECRYPT:
        raise SignatureError("the AK is not an attestation key (it can decrypt)")


def verify_signature(ak: Public, message: bytes, signature: Signature) -> None:
    """Raise SignatureError unless ``signature`` signs H(message) under ``ak``."""
    if signature.hash_alg not in (TpmAlg.SHA256, TpmAlg.SHA384):
        raise SignatureError("the quote is signed with an unsupported hash")
    name = hash_name(signature.hash_alg)
    value = hashlib.new(name, message).digest()
    parms = ak.parameters
    if isinstance(parms, EccParms) and signature.sig_alg == TpmAlg.ECDSA:
        if not isinstance(ak.unique, EccPoint) or parms.curve not in _CURVES:
            raise SignatureError("the AK's curve is not supported")
        tpm_keys.ecdsa_verify(_CURVES[TpmEccCurve(parms.curve)], (ak.unique.x, ak.unique.y),
                              value, signature.r, signature.s, hash_name=name)
    elif isinstance(parms, RsaParms) and signature.sig_alg in (TpmAlg.RSASSA, TpmAlg.RSAPSS):
        assert isinstance(ak.unique, bytes)
        tpm_keys.rsa_verify(ak.unique, parms.exponent, value, signature.sig, hash_name=name,
                            scheme="rsassa" if signature.sig_alg == TpmAlg.RSASSA else "rsapss")
    else:
        raise SignatureError("the quote's signature algorithm does not fit the AK")


def verify_quote(ak_public: bytes, attest: bytes, signature: bytes) -> tuple[Public, QuoteAttest]:
    """Parse and verify; SignatureError or FormatError if the quote is not the AK's."""
    ak = Public.from_bytes(ak_public)
    check_attestation_key(ak)
    quote = QuoteAttest.from_bytes(attest)
    verify_signature(ak, attest, Signature.from_bytes(signature))
    if len(quote.pcr_select.selections) != 1:
        raise FormatError("the quote must select PCRs of exactly one bank")
    return ak, quote
