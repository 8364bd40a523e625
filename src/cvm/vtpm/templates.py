"""Object templates (TPMT_PUBLIC) the platform and its tools agree on.

* The TCG default EK templates: "TCG EK Credential Profile for TPM Family 2.0", version 2.5,
  section B.3.3 Template L-1 (RSA 2048, AES-128-CFB, authPolicy = PolicyA_SHA256 =
  PolicySecret(TPM_RH_ENDORSEMENT), unique = 256 zero bytes) and Template L-2 (ECC NIST P-256,
  unique = two 32-byte zero coordinates), attributes 0x000300B2.
* The storage root key as ``tpm2_createprimary -C o -g sha256 -G ecc256:aes128cfb`` and
  systemd-cryptenroll 252 make it (attributes 0x00030072; "TCG TPM v2.0 Provisioning Guidance",
  version 1.0, section 7.5 adds noDA: 0x00030472).
* Attestation keys as ``tpm2_createak`` makes them (restricted signing, RSASSA or ECDSA SHA-256).
* Sealed data objects (KEYEDHASH, scheme NULL) as systemd-cryptenroll and ``tpm2_create -L``
  make them: fixedTPM|fixedParent, userWithAuth only when there is no policy.
* The public area ``tpm2_loadexternal`` builds from a PEM key (sign|decrypt|userWithAuth,
  the RSA exponent written out, 65537 included).
"""

from __future__ import annotations

from cvm.crypto.tpm_keys import load_public_pem
from cvm.errors import FormatError
from cvm.formats.tpm2.constants import TpmAlg, TpmaObject, TpmEccCurve, TpmRh
from cvm.formats.tpm2.public import (
    EccParms,
    EccPoint,
    KeyedHashParms,
    Public,
    RsaParms,
    Scheme,
    SymDefObject,
)
from cvm.vtpm.policy import PolicyDigest

F = TpmaObject
EK_ATTRIBUTES = (F.FIXED_TPM | F.FIXED_PARENT | F.SENSITIVE_DATA_ORIGIN | F.ADMIN_WITH_POLICY
                 | F.RESTRICTED | F.DECRYPT)
SRK_ATTRIBUTES = (F.FIXED_TPM | F.FIXED_PARENT | F.SENSITIVE_DATA_ORIGIN | F.USER_WITH_AUTH
                  | F.RESTRICTED | F.DECRYPT)
AK_ATTRIBUTES = (F.FIXED_TPM | F.FIXED_PARENT | F.SENSITIVE_DATA_ORIGIN | F.USER_WITH_AUTH
                 | F.RESTRICTED | F.SIGN_ENCRYPT)
SEALED_ATTRIBUTES = F.FIXED_TPM | F.FIXED_PARENT
EXTERNAL_ATTRIBUTES = F.DECRYPT | F.SIGN_ENCRYPT | F.USER_WITH_AUTH
CURVES = {"p256": TpmEccCurve.NIST_P256, "p384": TpmEccCurve.NIST_P384}


def ek_policy() -> bytes:
    """PolicyA_SHA256: PolicySecret(TPM_RH_ENDORSEMENT)."""
    return PolicyDigest.start().secret(TpmRh.ENDORSEMENT.to_bytes(4, "big")).value


def ek_template(kind: str = "rsa") -> Public:
    """TCG default EK template L-1 (``rsa``) or L-2 (``ecc``)."""
    symmetric = SymDefObject.aes_cfb(128)
    if kind == "rsa":
        return Public(TpmAlg.RSA, TpmAlg.SHA256, EK_ATTRIBUTES, ek_policy(),
                      RsaParms(symmetric, Scheme(), 2048, 0), bytes(256))
    return Public(TpmAlg.ECC, TpmAlg.SHA256, EK_ATTRIBUTES, ek_policy(),
                  EccParms(symmetric, Scheme(), TpmEccCurve.NIST_P256, Scheme()),
                  EccPoint(bytes(32), bytes(32)))


def srk_template(kind: str = "ecc", no_da: bool = False) -> Public:
    """The storage root key template (systemd / tpm2-tools default primary)."""
    attributes = SRK_ATTRIBUTES | (F.NO_DA if no_da else 0)
    symmetric = SymDefObject.aes_cfb(128)
    if kind == "rsa":
        return Public(TpmAlg.RSA, TpmAlg.SHA256, attributes, b"",
                      RsaParms(symmetric, Scheme(), 2048, 0), b"")
    return Public(TpmAlg.ECC, TpmAlg.SHA256, attributes, b"",
                  EccParms(symmetric, Scheme(), TpmEccCurve.NIST_P256, Scheme()), EccPoint())


def ak_template(kind: str = "ecc") -> Public:
    """A restricted signing key as ``tpm2_createak -G rsa|ecc -g sha256`` makes it."""
    if kind == "rsa":
        return Public(TpmAlg.RSA, TpmAlg.SHA256, AK_ATTRIBUTES, b"",
                      RsaParms(SymDefObject(), Scheme(TpmAlg.RSASSA, TpmAlg.SHA256), 2048, 0), b"")
    return Public(TpmAlg.ECC, TpmAlg.SHA256, AK_ATTRIBUTES, b"",
                  EccParms(SymDefObject(), Scheme(TpmAlg.ECDSA, TpmAlg.SHA256),
                           TpmEccCurve.NIST_P256, Scheme()), EccPoint())


def signing_key_template(kind: str = "ecc") -> Public:
    """An unrestricted signing key (scheme chosen per command)."""
    attributes = F.FIXED_TPM | F.FIXED_PARENT | F.SENSITIVE_DATA_ORIGIN | F.USER_WITH_AUTH | (
        F.SIGN_ENCRYPT)
    if kind == "rsa":
        return Public(TpmAlg.RSA, TpmAlg.SHA256, attributes, b"",
                      RsaParms(SymDefObject(), Scheme(), 2048, 0), b"")
    return Public(TpmAlg.ECC, TpmAlg.SHA256, attributes, b"",
                  EccParms(SymDefObject(), Scheme(), TpmEccCurve.NIST_P256, Scheme()), EccPoint())


def sealed_template(policy: bytes = b"", no_da: bool = False) -> Public:
    """A sealed data object; without a policy it is usable with its authValue."""
    attributes = SEALED_ATTRIBUTES | (F.NO_DA if no_da else 0)
    if not policy:
        attributes |= F.USER_WITH_AUTH
    return Public(TpmAlg.KEYEDHASH, TpmAlg.SHA256, attributes, policy,
                  KeyedHashParms(Scheme()), b"")


def public_from_pem(pem: bytes) -> Public:
    """The TPMT_PUBLIC ``tpm2_loadexternal -G rsa|ecc -u key.pem`` builds from a PEM key."""
    kind, first, second, curve = load_public_pem(pem)
    if kind == "rsa":
        assert isinstance(second, int)
        return Public(TpmAlg.RSA, TpmAlg.SHA256, EXTERNAL_ATTRIBUTES, b"",
                      RsaParms(SymDefObject(), Scheme(), len(first) * 8, second), first)
    if not isinstance(second, bytes) or curve not in CURVES:
        raise FormatError("unsupported ECC public key")
    return Public(TpmAlg.ECC, TpmAlg.SHA256, EXTERNAL_ATTRIBUTES, b"",
                  EccParms(SymDefObject(), Scheme(), CURVES[curve], Scheme()),
                  EccPoint(first, second))
