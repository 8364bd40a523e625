"""The object rules of :mod:`cvm.vtpm.tpm_object`, called directly: each consistency check of
TPM2_Create/CreatePrimary (Part 3 section 12.1) with its response code and message and the
template just inside it accepted; the binding of a public and a private area; which key is a
storage parent; the signing scheme a key may use; and what a shared secret refuses."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
from dataclasses import replace

import pytest

from cvm.crypto import tpm_keys
from cvm.errors import SignatureError, StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmaObject, TpmRh
from cvm.formats.tpm2.public import (
    EccParms,
    EccPoint,
    Public,
    RsaParms,
    Scheme,
    SymCipherParms,
    SymDefObject,
)
from cvm.formats.tpm2.response_code import TpmRc, for_parameter
from cvm.formats.tpm2.sensitive import Sensitive
from cvm.formats.tpm2.signature import Signature, SigScheme
from cvm.formats.tpm2.tpm2b import tpm2b
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import ak_template, sealed_template, signing_key_template, srk_template
from cvm.vtpm.tpm_object import (
    TpmObject,
    check_binding,
    check_template,
    is_storage_key,
    object_auth,
    pick_scheme,
    recover_secret,
    sign_digest,
    verify_digest,
)

F = TpmaObject
KEY = F.FIXED_TPM | F.FIXED_PARENT | F.SENSITIVE_DATA_ORIGIN | F.USER_WITH_AUTH
ATTRIBUTES_2 = for_parameter(TpmRc.ATTRIBUTES, 2)


def _refused(public: Public, data: bytes = b"", parameter: int = 2) -> tuple[int, str]:
    with pytest.raises(StatusError) as refused:
        check_template(public, data, parameter=parameter)
    return refused.value.code, str(refused.value)


def _sealed(attributes: int) -> Public:
    return replace(sealed_template(), attributes=attributes)


def _rsa(attributes: int = KEY | F.SIGN_ENCRYPT, **parms: object) -> Public:
    return Public(TpmAlg.RSA, TpmAlg.SHA256, attributes, b"",
                  replace(RsaParms(), **parms), b"")  # type: ignore[arg-type]


def _ecc(attributes: int = KEY | F.SIGN_ENCRYPT, **parms: object) -> Public:
    return Public(TpmAlg.ECC, TpmAlg.SHA256, attributes, b"",
                  replace(EccParms(), **parms), EccPoint())  # type: ignore[arg-type]


# ---- check_template ---------------------------------------------------------------------------
def test_name_alg_null_is_a_hash_error_on_the_given_parameter() -> None:
    template = replace(sealed_template(), name_alg=TpmAlg.NULL)
    code, text = _refused(template, b"x", parameter=3)
    assert code == for_parameter(TpmRc.HASH, 3)
    assert text.startswith("nameAlg may not be NULL")


def test_fixed_tpm_needs_fixed_parent_and_neither_is_fine() -> None:
    assert _refused(_sealed(F.FIXED_TPM | F.USER_WITH_AUTH), b"x") == (
        ATTRIBUTES_2, "fixedTPM requires fixedParent (TPM_RC_ATTRIBUTES (parameter 2))")
    check_template(_sealed(F.USER_WITH_AUTH), b"x", parameter=2)
    check_template(_sealed(F.FIXED_PARENT | F.USER_WITH_AUTH), b"x", parameter=2)


@pytest.mark.parametrize("both", [True, False])
def test_a_restricted_key_is_either_a_signing_or_a_storage_key(both: bool) -> None:
    usage = F.SIGN_ENCRYPT | F.DECRYPT if both else 0
    code, text = _refused(_rsa(KEY | F.RESTRICTED | usage))
    assert code == ATTRIBUTES_2
    assert text.startswith("a restricted key is either a signing key or a storage key")


def test_sealed_data_needs_sensitive_data_origin_clear() -> None:
    code, text = _refused(_sealed(F.FIXED_TPM | F.FIXED_PARENT | F.SENSITIVE_DATA_ORIGIN), b"x")
    assert code == ATTRIBUTES_2
    assert text.startswith("sealed data requires sensitiveDataOrigin clear")


@pytest.mark.parametrize("usage", [F.SIGN_ENCRYPT, F.DECRYPT])
def test_sealed_data_is_neither_a_sign_nor_a_decrypt_key(usage: int) -> None:
    code, text = _refused(_sealed(F.FIXED_TPM | F.FIXED_PARENT | usage), b"x")
    assert code == ATTRIBUTES_2
    assert text.startswith("a sealed data object may not be a sign or decrypt key")
    # without data it is an HMAC key the TPM makes, which may sign
    check_template(_sealed(F.FIXED_TPM | F.FIXED_PARENT | F.SENSITIVE_DATA_ORIGIN | usage), b"",
                   parameter=2)


def test_sealed_data_is_at_most_128_bytes() -> None:
    check_template(sealed_template(), b"d" * 128, parameter=2)
    code, text = _refused(sealed_template(), b"d" * 129)
    assert code == for_parameter(TpmRc.SIZE, 1)
    assert text.startswith("sealed data exceeds 128 bytes")


def test_a_keyedhash_object_needs_data_or_sensitive_data_origin() -> None:
    code, text = _refused(sealed_template(), b"")
    assert code == ATTRIBUTES_2
    assert text.startswith("a KEYEDHASH object needs data or sensitiveDataOrigin")


def test_only_keyedhash_objects_take_data_and_keys_need_sensitive_data_origin() -> None:
    code, text = _refused(_rsa(), b"x")
    assert code == for_parameter(TpmRc.SIZE, 1)
    assert text.startswith("only KEYEDHASH objects take sensitive data")
    code, text = _refused(_rsa(KEY & ~F.SENSITIVE_DATA_ORIGIN | F.SIGN_ENCRYPT))
    assert code == ATTRIBUTES_2
    assert text.startswith("keys require sensitiveDataOrigin")
    symcipher = Public(TpmAlg.SYMCIPHER, TpmAlg.SHA256, KEY | F.DECRYPT, b"", SymCipherParms(),
                       b"")
    check_template(symcipher, b"", parameter=2)


def test_storage_keys_are_aes_cfb_without_a_scheme() -> None:
    storage = KEY | F.RESTRICTED | F.DECRYPT
    check_template(_ecc(storage, symmetric=SymDefObject.aes_cfb(128)), b"", parameter=2)
    for symmetric in (SymDefObject(), SymDefObject(TpmAlg.AES, 128, TpmAlg.NULL),
                      SymDefObject(0x0026, 128, TpmAlg.CFB)):
        code, text = _refused(_ecc(storage, symmetric=symmetric))
        assert code == for_parameter(TpmRc.SYMMETRIC, 2)
        assert text.startswith("storage keys need AES-CFB")
    code, text = _refused(_ecc(storage, symmetric=SymDefObject.aes_cfb(128),
                               scheme=Scheme(TpmAlg.ECDSA, TpmAlg.SHA256)))
    assert code == for_parameter(TpmRc.SCHEME, 2)
    assert text.startswith("storage keys have no scheme")


def test_only_storage_keys_are_symmetric() -> None:
    code, text = _refused(_rsa(symmetric=SymDefObject.aes_cfb(128)))
    assert code == for_parameter(TpmRc.SYMMETRIC, 2)
    assert text.startswith("only storage keys are symmetric")


def test_restricted_signing_keys_need_a_scheme() -> None:
    check_template(ak_template("rsa"), b"", parameter=2)
    code, text = _refused(_rsa(KEY | F.RESTRICTED | F.SIGN_ENCRYPT))
    assert code == for_parameter(TpmRc.SCHEME, 2)
    assert text.startswith("restricted signing keys need a scheme")


def test_rsa_key_sizes_and_exponents() -> None:
    for bits in (1024, 2048, 3072):
        check_template(_rsa(key_bits=bits), b"", parameter=2)
    code, text = _refused(_rsa(key_bits=4096))
    assert code == for_parameter(TpmRc.KEY_SIZE, 2)
    assert text.startswith("RSA-4096")
    for exponent in (0, 3, 65537):
        check_template(_rsa(exponent=exponent), b"", parameter=2)
    code, text = _refused(_rsa(exponent=5))
    assert code == for_parameter(TpmRc.VALUE, 2)
    assert text.startswith("RSA exponent")


def test_ecc_curves() -> None:
    check_template(_ecc(curve=0x0004), b"", parameter=2)  # NIST P-384
    code, text = _refused(_ecc(curve=0x0005))
    assert code == for_parameter(TpmRc.CURVE, 2)
    assert text.startswith("ECC curve 0x0005")


# ---- storage parents, authValues ----------------------------------------------------------------
def test_a_storage_key_is_restricted_decrypt_not_sign_and_has_its_private_part() -> None:
    sensitive = Sensitive(TpmAlg.ECC, b"", b"", b"\x01")
    storage = srk_template()
    assert is_storage_key(storage, sensitive)
    assert not is_storage_key(storage, None)
    assert not is_storage_key(replace(storage, attributes=storage.attributes & ~F.RESTRICTED),
                              sensitive)
    assert not is_storage_key(replace(storage, attributes=storage.attributes & ~F.DECRYPT),
                              sensitive)
    assert not is_storage_key(replace(storage, attributes=storage.attributes | F.SIGN_ENCRYPT),
                              sensitive)
    keyed = replace(sealed_template(), attributes=F.RESTRICTED | F.DECRYPT)
    assert not is_storage_key(keyed, Sensitive(TpmAlg.KEYEDHASH, b"", b"", b""))


def test_an_objects_auth_value_loses_its_zero_padding() -> None:
    assert object_auth(Sensitive(TpmAlg.KEYEDHASH, b"pw\x00\x00", b"", b"")) == b"pw"
    assert object_auth(None) == b""
    item = TpmObject(sealed_template(), None, TpmRh.OWNER, b"")
    assert item.auth_value == b""


# ---- check_binding ------------------------------------------------------------------------------
def test_an_rsa_private_part_must_divide_the_modulus(tpm: Tpm, client: TpmClient) -> None:
    handle, public = client.create_primary(TpmRh.OWNER, srk_template("rsa"))
    sensitive = tpm.objects[handle].sensitive
    assert sensitive is not None
    check_binding(public, sensitive)
    for prime in (b"", b"\x01", b"\x02", sensitive.sensitive[:-1] + b"\x01"):
        with pytest.raises(StatusError, match=r"^public and private areas do not match") as bad:
            check_binding(public, replace(sensitive, sensitive=prime))
        assert bad.value.code == TpmRc.BINDING


# ---- schemes, signatures ------------------------------------------------------------------------
def _key(tpm: Tpm, client: TpmClient, template: Public) -> TpmObject:
    handle, _ = client.create_primary(TpmRh.OWNER, template)
    return tpm.objects[handle]


def test_the_scheme_is_the_keys_own_or_the_requested_one(tpm: Tpm, client: TpmClient) -> None:
    null = (TpmAlg.NULL, TpmAlg.NULL)
    ecdsa = (TpmAlg.ECDSA, TpmAlg.SHA256)
    free = _key(tpm, client, signing_key_template())
    assert pick_scheme(free, ecdsa) == ecdsa
    assert pick_scheme(free, (TpmAlg.ECDSA, TpmAlg.NULL)) == (TpmAlg.ECDSA, TpmAlg.NULL)
    with pytest.raises(StatusError, match=r"^neither key nor command gives a scheme") as refused:
        pick_scheme(free, null)
    assert refused.value.code == for_parameter(TpmRc.SCHEME, 2)
    with pytest.raises(StatusError) as refused:
        pick_scheme(free, (TpmAlg.NULL, TpmAlg.SHA256))
    assert refused.value.code == for_parameter(TpmRc.SCHEME, 2)
    fixed = _key(tpm, client, ak_template())
    assert pick_scheme(fixed, null) == ecdsa
    assert pick_scheme(fixed, (TpmAlg.NULL, TpmAlg.SHA384)) == ecdsa
    assert pick_scheme(fixed, ecdsa) == ecdsa
    for other in ((TpmAlg.ECDSA, TpmAlg.SHA384), (TpmAlg.RSASSA, TpmAlg.SHA256),
                  (TpmAlg.SHA256, TpmAlg.ECDSA)):
        with pytest.raises(StatusError, match=r"^scheme differs from the key's scheme") as refused:
            pick_scheme(fixed, other)
        assert refused.value.code == for_parameter(TpmRc.SCHEME, 2)


def test_a_signature_needs_a_scheme_of_the_keys_kind(tpm: Tpm, client: TpmClient) -> None:
    ecc = _key(tpm, client, signing_key_template("ecc"))
    value = bytes(range(32))
    for scheme in (TpmAlg.RSASSA, TpmAlg.RSAPSS):
        with pytest.raises(StatusError, match=f"^scheme {scheme:#06x} does not fit") as refused:
            sign_digest(ecc, scheme, TpmAlg.SHA256, value)
        assert refused.value.code == TpmRc.SCHEME
    rsa = _key(tpm, client, signing_key_template("rsa"))
    with pytest.raises(StatusError, match=r"^scheme 0x0018 does not fit") as refused:
        sign_digest(rsa, TpmAlg.ECDSA, TpmAlg.SHA256, value)
    assert refused.value.code == TpmRc.SCHEME
    with pytest.raises(StatusError, match=r"^a public-only object cannot sign") as refused:
        sign_digest(replace(rsa, sensitive=None), TpmAlg.RSASSA, TpmAlg.SHA256, value)
    assert refused.value.code == TpmRc.KEY
    for key, scheme in ((rsa, TpmAlg.RSASSA), (rsa, TpmAlg.RSAPSS), (ecc, TpmAlg.ECDSA)):
        signature = sign_digest(key, scheme, TpmAlg.SHA256, value)
        verify_digest(key.public, value, signature)
        other = TpmAlg.ECDSA if key is rsa else TpmAlg.RSASSA
        with pytest.raises(SignatureError, match=r"^signature algorithm does not fit the key"):
            verify_digest(key.public, value, replace(signature, sig_alg=other))


def test_an_rsa_signature_uses_the_keys_exponent(tpm: Tpm, client: TpmClient) -> None:
    """A key with exponent 3 signs and verifies with 3 (its public area says so)."""
    template = replace(signing_key_template("rsa"),
                       parameters=RsaParms(SymDefObject(), Scheme(), 1024, 3))
    key = _key(tpm, client, template)
    signature = sign_digest(key, TpmAlg.RSASSA, TpmAlg.SHA256, bytes(32))
    verify_digest(key.public, bytes(32), signature)
    assert isinstance(signature, Signature)


# ---- recover_secret -----------------------------------------------------------------------------
def test_a_secret_needs_a_key_with_its_private_part(tpm: Tpm, client: TpmClient) -> None:
    bad = StatusError("refused", 0x123)
    srk = _key(tpm, client, srk_template("ecc"))
    with pytest.raises(StatusError) as refused:
        recover_secret(replace(srk, sensitive=None), b"", b"SECRET", bad)
    assert refused.value is bad
    keyed = TpmObject(sealed_template(), Sensitive(TpmAlg.KEYEDHASH, b"", b"", b""),
                      TpmRh.OWNER, b"")
    with pytest.raises(StatusError) as refused:
        recover_secret(keyed, b"", b"SECRET", bad)
    assert refused.value is bad


def test_an_ecc_secret_point_has_coordinates_of_at_most_128_bytes(
        tpm: Tpm, client: TpmClient) -> None:
    """Coordinates over 128 bytes are refused with the caller's error, not parsed."""
    bad = StatusError("refused", 0x123)
    srk = _key(tpm, client, srk_template("ecc"))
    for point in (tpm2b(b"\x01" * 129) + tpm2b(b"\x01"), tpm2b(b"\x01") + tpm2b(b"\x01" * 129)):
        with pytest.raises(StatusError) as refused:
            recover_secret(srk, point, b"SECRET", bad)
        assert refused.value is bad


# ---- what the first mutation run left: build, derivation, schemes of other keys -----------------
def _kdfa_sha256(key: bytes, label: bytes, context_u: bytes, context_v: bytes,
                 bits: int) -> bytes:
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += std_hmac.new(key, counter.to_bytes(4, "big") + label + b"\x00" + context_u
                            + context_v + bits.to_bytes(4, "big"), hashlib.sha256).digest()
        counter += 1
    return out[:bits // 8]


def test_strip_auth_removes_only_trailing_zero_octets() -> None:
    assert object_auth(Sensitive(TpmAlg.KEYEDHASH, b"pwX\x00", b"", b"")) == b"pwX"
    assert object_auth(Sensitive(TpmAlg.KEYEDHASH, b"\x00pw", b"", b"")) == b"\x00pw"


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_a_primary_is_derived_from_the_seed_the_template_and_the_data(
        tpm: Tpm, client: TpmClient, kind: str) -> None:
    """KDFa(SHA-256, seed, "Primary Object Creation", Name(template) ‖ SHA-256(data),
    u32 counter) gives, in order, the seedValue (one nameAlg digest) and 32 bytes from which
    the key is derived with the same context."""
    template = srk_template(kind)
    handle, public = client.create_primary(TpmRh.OWNER, template)
    context = template.name() + hashlib.sha256(b"").digest()
    seed = tpm.seed(TpmRh.OWNER)
    label = b"Primary Object Creation"
    seed_value = _kdfa_sha256(seed, label, context, (1).to_bytes(4, "big"), 256)
    key_seed = _kdfa_sha256(seed, label, context, (2).to_bytes(4, "big"), 256)
    sensitive = tpm.objects[handle].sensitive
    assert sensitive is not None
    assert sensitive.seed_value == seed_value
    if kind == "ecc":
        assert sensitive.sensitive == tpm_keys.ecc_from_seed("p256", key_seed, context)
    else:
        assert (public.unique, sensitive.sensitive) == tpm_keys.rsa_from_seed(
            key_seed, context, 2048, 0)


def test_a_sealed_primary_mixes_its_data_into_the_derivation(tpm: Tpm,
                                                             client: TpmClient) -> None:
    handle, _ = client.create_primary(TpmRh.OWNER, sealed_template(), data=b"primary data")
    context = sealed_template().name() + hashlib.sha256(b"primary data").digest()
    sensitive = tpm.objects[handle].sensitive
    assert sensitive is not None
    assert sensitive.seed_value == _kdfa_sha256(
        tpm.seed(TpmRh.OWNER), b"Primary Object Creation", context, (1).to_bytes(4, "big"), 256)
    assert client.unseal(handle) == b"primary data"


def test_the_auth_value_is_at_most_one_name_digest(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    client.create(srk, sealed_template(), b"x", auth=b"a" * 32 + b"\x00" * 4)
    with pytest.raises(StatusError) as refused:
        client.create(srk, sealed_template(), b"x", auth=b"a" * 33)
    assert refused.value.code == for_parameter(TpmRc.SIZE, 1)


def test_a_symcipher_key_is_made_and_bound(tpm: Tpm, client: TpmClient) -> None:
    """A SYMCIPHER object: keyBits/8 random bytes, unique = H(seedValue ‖ key), its auth."""
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    template = Public(TpmAlg.SYMCIPHER, TpmAlg.SHA256, KEY | F.DECRYPT, b"", SymCipherParms(),
                      b"")
    blob, public = client.create(srk, template, auth=b"sym")
    handle = client.load(srk, blob, public)
    sensitive = tpm.objects[handle].sensitive
    assert sensitive is not None
    assert sensitive.sensitive_type == TpmAlg.SYMCIPHER
    assert len(sensitive.sensitive) == 16
    assert len(sensitive.seed_value) == 32
    assert public.unique == hashlib.sha256(sensitive.seed_value + sensitive.sensitive).digest()
    assert tpm.objects[handle].auth_value == b"sym"


def test_an_ordinary_rsa_key_has_the_templates_exponent(client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    template = replace(signing_key_template("rsa"),
                       parameters=RsaParms(SymDefObject(), Scheme(), 1024, 3))
    blob, public = client.create(srk, template)
    key = client.load(srk, blob, public)
    signature = client.sign(key, bytes(32), SigScheme(TpmAlg.RSASSA, TpmAlg.SHA256))
    verify_digest(public, bytes(32), signature)


def test_a_loaded_objects_auth_value_is_kept_without_padding(tpm: Tpm,
                                                             client: TpmClient) -> None:
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(srk, sealed_template(), b"x", auth=b"pw")
    handle = client.load(srk, blob, public)
    sensitive = tpm.objects[handle].sensitive
    assert sensitive is not None
    assert sensitive.auth_value == b"pw"


def test_a_key_of_another_type_takes_the_requested_scheme() -> None:
    hmac_key = TpmObject(
        replace(sealed_template(), attributes=F.SENSITIVE_DATA_ORIGIN | F.SIGN_ENCRYPT),
        Sensitive(TpmAlg.KEYEDHASH, b"", b"", b""), TpmRh.OWNER, b"")
    assert pick_scheme(hmac_key, (TpmAlg.HMAC, TpmAlg.SHA256)) == (TpmAlg.HMAC, TpmAlg.SHA256)


def test_a_key_scheme_without_a_hash_still_binds_the_scheme() -> None:
    """A key whose scheme names no hash still has a scheme: a request with a hash differs."""
    key = TpmObject(_ecc(scheme=Scheme(TpmAlg.ECDSA, TpmAlg.NULL)), None, TpmRh.OWNER, b"")
    with pytest.raises(StatusError) as refused:
        pick_scheme(key, (TpmAlg.ECDSA, TpmAlg.SHA256))
    assert refused.value.code == for_parameter(TpmRc.SCHEME, 2)
    assert pick_scheme(key, (TpmAlg.NULL, TpmAlg.NULL)) == (TpmAlg.ECDSA, TpmAlg.NULL)
