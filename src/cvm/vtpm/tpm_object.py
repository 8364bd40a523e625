"""Objects of the vTPM: creation from a template, primary derivation, keys and signatures.

TCG "TPM 2.0 Library, Part 1", revision 1.59, sections 27.2–27.3 (object creation and the
attribute consistency rules, as Part 3 section 12.1 lists them with their TPM_RC), section
16 (Names and Qualified Names: ``QN = nameAlg ‖ H(QN_parent ‖ Name)``, a hierarchy's QN being
its handle) and section 27.2.6 (``unique`` of a KEYEDHASH/SYMCIPHER object: ``H_nameAlg(
seedValue ‖ sensitive)``). Primary objects are derived deterministically from the
hierarchy's primary seed, the template's Name and the caller's sensitive data (Part 1
section 26.3): the same template always gives the same key. A derived key is never kept
outside the TPM's own state: it is re-derived, uncached, whenever a command needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from cvm.crypto import tpm_keys
from cvm.crypto.tpm_kdf import kdfa, kdfe
from cvm.errors import FormatError, IntegrityError, SignatureError, StatusError
from cvm.formats.tpm2.constants import (
    MAX_SYM_DATA,
    TpmAlg,
    TpmaObject,
    TpmEccCurve,
    TpmRh,
    digest,
    digest_size,
    hash_name,
)
from cvm.formats.tpm2.public import (
    EccParms,
    EccPoint,
    KeyedHashParms,
    Public,
    RsaParms,
    SymCipherParms,
)
from cvm.formats.tpm2.response_code import TpmRc, describe, for_parameter
from cvm.formats.tpm2.sensitive import Sensitive, SensitiveCreate
from cvm.formats.tpm2.signature import Signature
from cvm.formats.tpm2.tpm2b import read_tpm2b, reader

Random = Callable[[int], bytes]
CURVE_NAMES = {TpmEccCurve.NIST_P256: "p256", TpmEccCurve.NIST_P384: "p384"}
RSA_KEY_BITS = (1024, 2048, 3072)


def fail(code: int, message: str) -> StatusError:
    """A TPM status error whose message names the code as the spec does."""
    return StatusError(f"{message} ({describe(code)})", code)


def strip_auth(value: bytes) -> bytes:
    """Remove trailing zero octets of an authValue (Part 1 section 19.6.4.3)."""
    return value.rstrip(b"\x00")


@dataclass
class TpmObject:
    """A loaded object: its public area, sensitive area (None if public only), and where."""

    public: Public
    sensitive: Sensitive | None
    hierarchy: int
    qualified_name: bytes

    @property
    def name(self) -> bytes:
        return self.public.name()

    @property
    def auth_value(self) -> bytes:
        return object_auth(self.sensitive)

    def has(self, flag: int) -> bool:
        return self.public.has(flag)

    @property
    def is_storage_parent(self) -> bool:
        return is_storage_key(self.public, self.sensitive)


def object_auth(sensitive: Sensitive | None) -> bytes:
    """An object's authValue without its zero padding (empty for a public-only object)."""
    return strip_auth(sensitive.auth_value) if sensitive else b""


def is_storage_key(public: Public, sensitive: Sensitive | None) -> bool:
    """A parent TPM2_Create and TPM2_Load accept: an RSA or ECC key, restricted, decrypt, not
    sign, with its private part loaded."""
    return (
        public.type in (TpmAlg.RSA, TpmAlg.ECC)
        and public.has(TpmaObject.RESTRICTED)
        and public.has(TpmaObject.DECRYPT)
        and not public.has(TpmaObject.SIGN_ENCRYPT)
        and sensitive is not None
    )


def qualified_name(parent_qn: bytes, public: Public) -> bytes:
    """``nameAlg ‖ H_nameAlg(QN_parent ‖ Name)``."""
    name = public.name()
    return name[:2] + digest(public.name_alg, parent_qn, name)


def hierarchy_qn(hierarchy: int) -> bytes:
    return hierarchy.to_bytes(4, "big")


def check_template(public: Public, sensitive_data: bytes, *, parameter: int) -> None:
    """The consistency checks of TPM2_Create/CreatePrimary (Part 3 section 12.1)."""
    bad = for_parameter(TpmRc.ATTRIBUTES, parameter)
    attributes = public.attributes
    if public.name_alg == TpmAlg.NULL:
        raise fail(for_parameter(TpmRc.HASH, parameter), "nameAlg may not be NULL")
    if bool(attributes & TpmaObject.FIXED_TPM) and not attributes & TpmaObject.FIXED_PARENT:
        raise fail(bad, "fixedTPM requires fixedParent")
    restricted = bool(attributes & TpmaObject.RESTRICTED)
    decrypt = bool(attributes & TpmaObject.DECRYPT)
    sign = bool(attributes & TpmaObject.SIGN_ENCRYPT)
    if restricted and decrypt == sign:
        raise fail(bad, "a restricted key is either a signing key or a storage key")
    parms = public.parameters
    if isinstance(parms, KeyedHashParms):
        if sensitive_data and attributes & TpmaObject.SENSITIVE_DATA_ORIGIN:
            raise fail(bad, "sealed data requires sensitiveDataOrigin clear")
        if sensitive_data and (sign or decrypt):
            raise fail(bad, "a sealed data object may not be a sign or decrypt key")
        if len(sensitive_data) > MAX_SYM_DATA:
            raise fail(for_parameter(TpmRc.SIZE, 1), "sealed data exceeds 128 bytes")
        if not sensitive_data and not attributes & TpmaObject.SENSITIVE_DATA_ORIGIN:
            raise fail(bad, "a KEYEDHASH object needs data or sensitiveDataOrigin")
        return
    if sensitive_data:
        raise fail(for_parameter(TpmRc.SIZE, 1), "only KEYEDHASH objects take sensitive data")
    if not attributes & TpmaObject.SENSITIVE_DATA_ORIGIN:
        raise fail(bad, "keys require sensitiveDataOrigin")
    if isinstance(parms, SymCipherParms):
        return
    assert isinstance(parms, RsaParms | EccParms)
    if restricted and decrypt:
        symmetric = parms.symmetric
        if symmetric.algorithm != TpmAlg.AES or symmetric.mode != TpmAlg.CFB:
            raise fail(for_parameter(TpmRc.SYMMETRIC, parameter), "storage keys need AES-CFB")
        if parms.scheme.scheme != TpmAlg.NULL:
            raise fail(for_parameter(TpmRc.SCHEME, parameter), "storage keys have no scheme")
    elif parms.symmetric.algorithm != TpmAlg.NULL:
        raise fail(for_parameter(TpmRc.SYMMETRIC, parameter), "only storage keys are symmetric")
    if restricted and sign and parms.scheme.scheme == TpmAlg.NULL:
        raise fail(for_parameter(TpmRc.SCHEME, parameter), "restricted signing keys need a scheme")
    if isinstance(parms, RsaParms) and parms.key_bits not in RSA_KEY_BITS:
        raise fail(for_parameter(TpmRc.KEY_SIZE, parameter), f"RSA-{parms.key_bits}")
    if isinstance(parms, RsaParms) and parms.exponent not in (0, 65537, 3):
        raise fail(for_parameter(TpmRc.VALUE, parameter), "RSA exponent")
    if isinstance(parms, EccParms) and parms.curve not in CURVE_NAMES:
        raise fail(for_parameter(TpmRc.CURVE, parameter), f"ECC curve {parms.curve:#06x}")


def build(
    template: Public,
    in_sensitive: SensitiveCreate,
    random: Random,
    derive_seed: bytes | None = None,
) -> tuple[Public, Sensitive]:
    """Make the key material for ``template``; primaries pass ``derive_seed`` (deterministic)."""
    size = digest_size(template.name_alg)
    if len(strip_auth(in_sensitive.user_auth)) > size:
        raise fail(for_parameter(TpmRc.SIZE, 1), "authValue is longer than the nameAlg digest")
    auth = strip_auth(in_sensitive.user_auth)
    seed_value = random(size)
    parms = template.parameters
    if isinstance(parms, KeyedHashParms):
        secret = in_sensitive.data or random(size)
        unique: bytes | EccPoint = digest(template.name_alg, seed_value, secret)
        return template.with_unique(unique), Sensitive(TpmAlg.KEYEDHASH, auth, seed_value, secret)
    if isinstance(parms, SymCipherParms):
        secret = random(parms.symmetric.key_bits // 8)
        unique = digest(template.name_alg, seed_value, secret)
        return template.with_unique(unique), Sensitive(TpmAlg.SYMCIPHER, auth, seed_value, secret)
    if isinstance(parms, RsaParms):
        if derive_seed is not None:
            modulus, prime = tpm_keys.rsa_from_seed(
                random(32), derive_seed, parms.key_bits, parms.exponent
            )
        else:
            modulus, prime = tpm_keys.rsa_generate(parms.key_bits, parms.exponent)
        return template.with_unique(modulus), Sensitive(TpmAlg.RSA, auth, seed_value, prime)
    assert isinstance(parms, EccParms)
    curve = CURVE_NAMES[TpmEccCurve(parms.curve)]
    if derive_seed is not None:
        scalar = tpm_keys.ecc_from_seed(curve, random(32), derive_seed)
    else:
        scalar = tpm_keys.ecc_generate(curve)
    x, y = tpm_keys.ecc_point(curve, scalar)
    return template.with_unique(EccPoint(x, y)), Sensitive(TpmAlg.ECC, auth, seed_value, scalar)


def seeded_random(seed: bytes, context: bytes) -> Random:
    """A deterministic byte stream: KDFa(SHA-256, seed, "Primary Object Creation", ...)."""
    counter = 0

    def take(size: int) -> bytes:
        nonlocal counter
        counter += 1
        return kdfa(
            "sha256", seed, b"Primary Object Creation", context, counter.to_bytes(4, "big"),
            bits=size * 8,
        )

    return take


def primary_context(template: Public, data: bytes) -> bytes:
    """What the primary derivation mixes in: Name of the template as given, and the data."""
    return template.name() + digest(TpmAlg.SHA256, data)


def check_binding(public: Public, sensitive: Sensitive) -> None:
    """The public and sensitive areas belong together (TPM_RC_BINDING otherwise)."""
    bad = fail(TpmRc.BINDING, "public and private areas do not match")
    if sensitive.sensitive_type != public.type:
        raise bad
    if public.type in (TpmAlg.KEYEDHASH, TpmAlg.SYMCIPHER):
        if digest(public.name_alg, sensitive.seed_value, sensitive.sensitive) != public.unique:
            raise bad
    elif public.type == TpmAlg.RSA:
        assert isinstance(public.unique, bytes)
        modulus = int.from_bytes(public.unique, "big")
        prime = int.from_bytes(sensitive.sensitive, "big")
        if prime <= 1 or modulus % prime:
            raise bad
    else:
        assert isinstance(public.parameters, EccParms)
        try:
            point = tpm_keys.ecc_point(CURVE_NAMES[TpmEccCurve(public.parameters.curve)],
                                       sensitive.sensitive)
        except (ValueError, KeyError, FormatError):
            raise bad from None
        if EccPoint(*point) != public.unique:
            raise bad


def sign_digest(item: TpmObject, scheme: int, hash_alg: int, value: bytes) -> Signature:
    """Sign ``value`` (a digest of ``hash_alg``) with a loaded signing key."""
    if item.sensitive is None:
        raise fail(TpmRc.KEY, "a public-only object cannot sign")
    parms = item.public.parameters
    name = hash_name(hash_alg)
    if isinstance(parms, EccParms) and scheme == TpmAlg.ECDSA:
        curve = CURVE_NAMES[TpmEccCurve(parms.curve)]
        r, s = tpm_keys.ecdsa_sign(curve, item.sensitive.sensitive, value, name)
        return Signature(scheme, hash_alg, r=r, s=s)
    if isinstance(parms, RsaParms) and scheme in (TpmAlg.RSASSA, TpmAlg.RSAPSS):
        assert isinstance(item.public.unique, bytes)
        sig = tpm_keys.rsa_sign(
            item.public.unique, parms.exponent, item.sensitive.sensitive, value,
            hash_name=name, scheme="rsassa" if scheme == TpmAlg.RSASSA else "rsapss",
        )
        return Signature(scheme, hash_alg, sig=sig)
    raise fail(TpmRc.SCHEME, f"scheme {scheme:#06x} does not fit the key")


def verify_digest(public: Public, value: bytes, signature: Signature) -> None:
    """Raise :class:`SignatureError` unless ``signature`` over ``value`` verifies."""
    parms = public.parameters
    name = hash_name(signature.hash_alg)
    if isinstance(parms, EccParms) and signature.sig_alg == TpmAlg.ECDSA:
        assert isinstance(public.unique, EccPoint)
        curve = CURVE_NAMES[TpmEccCurve(parms.curve)]
        tpm_keys.ecdsa_verify(curve, (public.unique.x, public.unique.y), value,
                              signature.r, signature.s, hash_name=name)
        return
    if isinstance(parms, RsaParms) and signature.sig_alg in (TpmAlg.RSASSA, TpmAlg.RSAPSS):
        assert isinstance(public.unique, bytes)
        tpm_keys.rsa_verify(
            public.unique, parms.exponent, value, signature.sig, hash_name=name,
            scheme="rsassa" if signature.sig_alg == TpmAlg.RSASSA else "rsapss",
        )
        return
    raise SignatureError("signature algorithm does not fit the key")


def pick_scheme(item: TpmObject, requested: tuple[int, int]) -> tuple[int, int]:
    """The signing scheme: the key's own if it has one (then ``requested`` must match or be
    NULL), else the requested one (Part 3 section 20.2 / TPM_RC_SCHEME)."""
    parms = item.public.parameters
    own: tuple[int, int] = (TpmAlg.NULL, TpmAlg.NULL)
    if isinstance(parms, RsaParms | EccParms):
        own = (parms.scheme.scheme, parms.scheme.hash_alg)
    if own[0] == TpmAlg.NULL:
        if requested[0] == TpmAlg.NULL:
            raise fail(for_parameter(TpmRc.SCHEME, 2), "neither key nor command gives a scheme")
        return requested
    if requested[0] not in (TpmAlg.NULL, own[0]) or (
        requested[0] != TpmAlg.NULL and requested[1] != own[1]
    ):
        raise fail(for_parameter(TpmRc.SCHEME, 2), "scheme differs from the key's scheme")
    return own


def hierarchy_of(handle: int) -> int:
    """The hierarchy a primary handle selects (TPM_RH_NULL for the null hierarchy)."""
    return handle if handle in (TpmRh.OWNER, TpmRh.ENDORSEMENT, TpmRh.PLATFORM) else TpmRh.NULL


def with_auth(sensitive: Sensitive, auth: bytes) -> Sensitive:
    return replace(sensitive, auth_value=auth)


def recover_secret(key: TpmObject, encrypted: bytes, label: bytes, bad: StatusError) -> bytes:
    """The secret a caller shared with ``key`` (TPM 2.0 Part 1, Annex B.10.3 and C.6.1).

    RSA keys: RSA-OAEP decryption with ``label``. ECC keys: ``encrypted`` is the caller's
    ephemeral point (TPMS_ECC_POINT); the secret is ``KDFe(nameAlg, x(d * Q_e), label,
    x(Q_e), x(Q_key))``, as long as one ``nameAlg`` digest. Raises ``bad`` when it does not
    decrypt. Used for salted sessions (label "SECRET") and credentials (label "IDENTITY").
    """
    parms = key.public.parameters
    if key.sensitive is None or not isinstance(parms, RsaParms | EccParms):
        raise bad
    algorithm = hash_name(key.public.name_alg)
    if isinstance(parms, RsaParms):
        assert isinstance(key.public.unique, bytes)
        try:
            return tpm_keys.rsa_oaep_decrypt(key.public.unique, parms.exponent,
                                             key.sensitive.sensitive, encrypted,
                                             hash_name=algorithm, label=label)
        except IntegrityError:
            raise bad from None
    assert isinstance(key.public.unique, EccPoint)
    source = reader(encrypted, "TPMS_ECC_POINT")
    try:
        point = (read_tpm2b(source, "x", 128), read_tpm2b(source, "y", 128))
        source.expect_end()
        z = tpm_keys.ecdh_x(CURVE_NAMES[TpmEccCurve(parms.curve)], key.sensitive.sensitive,
                            point)
    except (FormatError, IntegrityError):
        raise bad from None
    return kdfe(algorithm, z, label, point[0], key.public.unique.x,
                bits=digest_size(key.public.name_alg) * 8)
