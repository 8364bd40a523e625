"""The keys of TPM objects: each signature and decryption checked by ``cryptography`` on its
own, each refusal with its class and message, seed derivation against the Part 1 formula."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import math
import re

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from cvm.crypto.tpm_keys import (
    RSA_DEFAULT_EXPONENT,
    ecc_from_seed,
    ecc_generate,
    ecc_point,
    ecdh_x,
    ecdsa_sign,
    ecdsa_verify,
    load_public_pem,
    public_key_fingerprint,
    public_key_pem,
    rsa_from_seed,
    rsa_generate,
    rsa_oaep_decrypt,
    rsa_oaep_encrypt,
    rsa_sign,
    rsa_verify,
)
from cvm.errors import FormatError, IntegrityError, SignatureError, UsageError

ORDERS = {
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "p384": int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AEC"
                "EC196ACCC52973", 16),
}
CURVES = {"p256": (ec.SECP256R1(), 32, "sha256"), "p384": (ec.SECP384R1(), 48, "sha384")}


def _message(text: str) -> str:
    return "^" + re.escape(text) + "$"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def _parts(key: rsa.RSAPrivateKey) -> tuple[bytes, bytes]:
    numbers = key.private_numbers()
    return numbers.public_numbers.n.to_bytes(256, "big"), numbers.p.to_bytes(128, "big")


def _public(curve: str, x: bytes, y: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), CURVES[curve][0]).public_key()


# --- ECC -------------------------------------------------------------------------------


def test_an_unknown_curve_is_refused_by_name() -> None:
    with pytest.raises(UsageError, match=_message("unsupported curve 'p521'")):
        ecc_point("p521", b"\x01")
    with pytest.raises(UsageError, match=_message("unsupported curve 'p521'")):
        ecc_generate("p521")


@pytest.mark.parametrize("curve", CURVES)
def test_a_point_is_the_scalars_public_key_at_the_curves_width(curve: str) -> None:
    scalar = ecc_generate(curve)
    size = CURVES[curve][1]
    assert len(scalar) == size
    x, y = ecc_point(curve, scalar)
    assert len(x) == len(y) == size
    numbers = ec.derive_private_key(int.from_bytes(scalar, "big"), CURVES[curve][0]
                                    ).public_key().public_numbers()
    assert (int.from_bytes(x, "big"), int.from_bytes(y, "big")) == (numbers.x, numbers.y)
    # a small scalar still gives full-width coordinates (leading zero bytes kept)
    assert [len(c) for c in ecc_point(curve, b"\x01")] == [size, size]


@pytest.mark.parametrize("curve", CURVES)
def test_a_seed_derived_scalar_is_kdfa_ecc_reduced_into_1_to_n_minus_1(curve: str) -> None:
    order = ORDERS[curve]
    size = CURVES[curve][1]
    bits = (size + 8) * 8
    stream = b""
    counter = 1
    while len(stream) * 8 < bits:
        stream += std_hmac.new(b"S" * 32, counter.to_bytes(4, "big") + b"ECC\x00" + b"ctx"
                               + bits.to_bytes(4, "big"), "sha256").digest()
        counter += 1
    expected = int.from_bytes(stream[: bits // 8], "big") % (order - 1) + 1
    assert ecc_from_seed(curve, b"S" * 32, b"ctx") == expected.to_bytes(size, "big")


@pytest.mark.parametrize("curve", CURVES)
def test_ecdsa_over_a_digest_verifies_independently(curve: str) -> None:
    _, size, hash_name = CURVES[curve]
    scalar = ecc_generate(curve)
    x, y = ecc_point(curve, scalar)
    digest = hashlib.new(hash_name, b"quoted").digest()
    r, s = ecdsa_sign(curve, scalar, digest, hash_name)
    assert len(r) == len(s) == size
    der = utils.encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    _public(curve, x, y).verify(der, b"quoted", ec.ECDSA(getattr(hashes, hash_name.upper())()))
    ecdsa_verify(curve, (x, y), digest, r, s, hash_name=hash_name)


def test_ecdsa_verification_refuses_every_mismatch() -> None:
    scalar = ecc_generate("p256")
    point = ecc_point("p256", scalar)
    digest = hashlib.sha256(b"m").digest()
    r, s = ecdsa_sign("p256", scalar, digest, "sha256")
    other_digest = hashlib.sha256(b"n").digest()
    off_curve = (point[0], (int.from_bytes(point[1], "big") ^ 1).to_bytes(32, "big"))
    cases = [
        (point, other_digest, r, s), (point, digest, s, r), (point, digest, r, r),
        (ecc_point("p256", ecc_generate("p256")), digest, r, s), (off_curve, digest, r, s),
        (point, digest, bytes(32), s),
    ]
    for key, signed, first, second in cases:
        with pytest.raises(SignatureError, match=_message("ECDSA signature does not verify")):
            ecdsa_verify("p256", key, signed, first, second, hash_name="sha256")


def test_ecdh_is_the_x_of_the_shared_point() -> None:
    mine, theirs = ecc_generate("p384"), ec.generate_private_key(ec.SECP384R1())
    numbers = theirs.public_key().public_numbers()
    point = (numbers.x.to_bytes(48, "big"), numbers.y.to_bytes(48, "big"))
    ours = ec.derive_private_key(int.from_bytes(mine, "big"), ec.SECP384R1())
    assert ecdh_x("p384", mine, point) == theirs.exchange(ec.ECDH(), ours.public_key())


def test_ecdh_refuses_a_point_off_the_curve() -> None:
    x, y = ecc_point("p256", ecc_generate("p256"))
    bad = (x, (int.from_bytes(y, "big") ^ 1).to_bytes(32, "big"))
    with pytest.raises(IntegrityError, match=_message("ECC point is not on the curve")):
        ecdh_x("p256", ecc_generate("p256"), bad)


# --- RSA -------------------------------------------------------------------------------


def test_a_random_rsa_key_has_the_asked_size_and_exponent() -> None:
    n, p = rsa_generate(2048, 0)
    assert len(n) == 256 and len(p) == 128
    modulus, prime = int.from_bytes(n, "big"), int.from_bytes(p, "big")
    assert modulus.bit_length() == 2048 and modulus % prime == 0
    q = modulus // prime
    assert math.gcd(RSA_DEFAULT_EXPONENT, (prime - 1) * (q - 1)) == 1
    n3, p3 = rsa_generate(2048, 3)
    prime3 = int.from_bytes(p3, "big")
    assert (prime3 - 1) % 3 and (int.from_bytes(n3, "big") // prime3 - 1) % 3


def test_seed_derived_primes_respect_the_exponent_and_come_largest_first() -> None:
    """With e = 3 the primes must satisfy gcd(3, p - 1) = 1 (p = 2 mod 3), else the key has
    no private exponent; the larger prime is the one kept (Part 2 Table 224)."""
    n, p = rsa_from_seed(b"s" * 32, b"ctx", 1024, 3)
    modulus, prime = int.from_bytes(n, "big"), int.from_bytes(p, "big")
    q = modulus // prime
    assert modulus == prime * q and prime > q and len(n) == 128 and len(p) == 64
    assert prime % 3 == 2 and q % 3 == 2
    for value in (prime, q):
        assert value.bit_length() == 512 and value >> 510 == 3 and value % 2
    signature = rsa_sign(n, 3, p, hashlib.sha256(b"m").digest(), hash_name="sha256",
                         scheme="rsassa")
    rsa_verify(n, 3, hashlib.sha256(b"m").digest(), signature, hash_name="sha256",
               scheme="rsassa")
    assert rsa_from_seed(b"s" * 32, b"ctx", 1024, 0) == rsa_from_seed(b"s" * 32, b"ctx", 1024,
                                                                      RSA_DEFAULT_EXPONENT)


def test_a_prime_that_does_not_divide_the_modulus_is_refused(rsa_key: rsa.RSAPrivateKey
                                                              ) -> None:
    n, p = _parts(rsa_key)
    digest = hashlib.sha256(b"m").digest()
    bad = (int.from_bytes(p, "big") + 2).to_bytes(128, "big")
    for prime in (bad, b"\x01", b"\x00"):
        with pytest.raises(FormatError, match=_message(
                "RSA private prime does not divide the modulus")):
            rsa_sign(n, 0, prime, digest, hash_name="sha256", scheme="rsassa")
        # decryption stays detail-free: the broken key is one more failure to decrypt
        with pytest.raises(IntegrityError, match=_message("RSA-OAEP decryption failed")):
            rsa_oaep_decrypt(n, 0, prime, bytes(256), hash_name="sha256", label=b"")


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha384", "sha512"])
def test_rsassa_and_pss_verify_independently(rsa_key: rsa.RSAPrivateKey, hash_name: str
                                              ) -> None:
    n, p = _parts(rsa_key)
    algorithm = getattr(hashes, hash_name.upper())()
    digest = hashlib.new(hash_name, b"signed").digest()
    public = rsa_key.public_key()
    pkcs1 = rsa_sign(n, 0, p, digest, hash_name=hash_name, scheme="rsassa")
    public.verify(pkcs1, b"signed", padding.PKCS1v15(), algorithm)
    pss = rsa_sign(n, 0, p, digest, hash_name=hash_name, scheme="rsapss")
    # a TPM's PSS salt is as long as the digest, MGF1 with the same hash
    public.verify(pss, b"signed", padding.PSS(padding.MGF1(algorithm), algorithm.digest_size),
                  algorithm)
    with pytest.raises(InvalidSignature):
        public.verify(pss, b"signed", padding.PSS(padding.MGF1(algorithm), 0), algorithm)
    for signature, scheme in ((pkcs1, "rsassa"), (pss, "rsapss")):
        rsa_verify(n, RSA_DEFAULT_EXPONENT, digest, signature, hash_name=hash_name,
                   scheme=scheme)
        rsa_verify(n, 0, digest, signature, hash_name=hash_name, scheme=scheme)


def test_rsa_verification_refuses_every_mismatch(rsa_key: rsa.RSAPrivateKey) -> None:
    n, p = _parts(rsa_key)
    digest = hashlib.sha256(b"signed").digest()
    pkcs1 = rsa_sign(n, 0, p, digest, hash_name="sha256", scheme="rsassa")
    pss = rsa_sign(n, 0, p, digest, hash_name="sha256", scheme="rsapss")
    other = hashlib.sha256(b"other").digest()
    cases = [
        (n, 65537, other, pkcs1, "rsassa"), (n, 65537, digest, pss, "rsassa"),
        (n, 65537, digest, pkcs1, "rsapss"), (n, 3, digest, pkcs1, "rsassa"),
        (n, 65537, digest, pkcs1[:-1], "rsassa"), (n, 65537, other, pss, "rsapss"),
        ((4).to_bytes(256, "big"), 65537, digest, pkcs1, "rsassa"),
    ]
    for modulus, exponent, signed, signature, scheme in cases:
        with pytest.raises(SignatureError, match=_message("RSA signature does not verify")):
            rsa_verify(modulus, exponent, signed, signature, hash_name="sha256", scheme=scheme)


def test_an_unknown_signature_scheme_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    n, p = _parts(rsa_key)
    digest = hashlib.sha256(b"m").digest()
    with pytest.raises(UsageError, match=_message("unsupported RSA signature scheme 'rsaes'")):
        rsa_sign(n, 0, p, digest, hash_name="sha256", scheme="rsaes")
    with pytest.raises(UsageError, match=_message("unsupported RSA signature scheme 'rsaes'")):
        rsa_verify(n, 0, digest, bytes(256), hash_name="sha256", scheme="rsaes")


def test_oaep_with_label_and_hash_round_trips_independently(rsa_key: rsa.RSAPrivateKey
                                                            ) -> None:
    n, p = _parts(rsa_key)
    sha384 = hashes.SHA384()
    ciphertext = rsa_oaep_encrypt(n, 0, b"seed", hash_name="sha384", label=b"DUPLICATE\x00")
    assert rsa_key.decrypt(ciphertext, padding.OAEP(padding.MGF1(sha384), sha384,
                                                    b"DUPLICATE\x00")) == b"seed"
    theirs = rsa_key.public_key().encrypt(
        b"seed", padding.OAEP(padding.MGF1(sha384), sha384, b"DUPLICATE\x00"))
    assert rsa_oaep_decrypt(n, 0, p, theirs, hash_name="sha384", label=b"DUPLICATE\x00"
                            ) == b"seed"
    for label, name in ((b"DUPLICATE", "sha384"), (b"DUPLICATE\x00", "sha256")):
        with pytest.raises(IntegrityError, match=_message("RSA-OAEP decryption failed")):
            rsa_oaep_decrypt(n, 0, p, theirs, hash_name=name, label=label)
    small_e = rsa_oaep_encrypt(n, 3, b"x", hash_name="sha256", label=b"")
    with pytest.raises(ValueError):
        rsa_key.decrypt(small_e, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(),
                                              b""))


# --- PEM, fingerprints -------------------------------------------------------------------


def test_public_key_pem_of_rsa_with_the_exponent_as_int_bytes_or_default(
        rsa_key: rsa.RSAPrivateKey) -> None:
    n, _ = _parts(rsa_key)
    expected = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for exponent in (65537, b"\x01\x00\x01", 0, b"\x00"):
        assert public_key_pem("rsa", n, exponent) == expected
    three = serialization.load_pem_public_key(public_key_pem("rsa", n, 3))
    assert isinstance(three, rsa.RSAPublicKey) and three.public_numbers().e == 3


@pytest.mark.parametrize("curve", CURVES)
def test_public_key_pem_of_ecc_with_y_as_bytes_or_int(curve: str) -> None:
    x, y = ecc_point(curve, ecc_generate(curve))
    expected = _public(curve, x, y).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert public_key_pem("ecc", x, y, curve) == expected
    assert public_key_pem("ecc", x, int.from_bytes(y, "big"), curve) == expected
    assert load_public_pem(expected) == ("ecc", x, y, curve)


def test_the_default_curve_is_p256() -> None:
    x, y = ecc_point("p256", ecc_generate("p256"))
    assert public_key_pem("ecc", x, y) == public_key_pem("ecc", x, y, "p256")
    assert public_key_pem("ecc", x, int.from_bytes(y, "big")) == public_key_pem("ecc", x, y)


def test_the_fingerprint_is_sha256_of_the_pkcs1_key_or_the_point(rsa_key: rsa.RSAPrivateKey
                                                                 ) -> None:
    public = rsa_key.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1 = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    assert public_key_fingerprint(pem) == hashlib.sha256(pkcs1).digest()
    x, y = ecc_point("p256", ecc_generate("p256"))
    ecc_pem = public_key_pem("ecc", x, y)
    assert public_key_fingerprint(ecc_pem) == hashlib.sha256(b"\x04" + x + y).digest()


def test_a_fingerprint_needs_an_rsa_or_ecc_pem_key() -> None:
    with pytest.raises(FormatError, match=_message("not a PEM public key")):
        public_key_fingerprint(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(FormatError, match=_message("not a PEM public key")):
        public_key_fingerprint("not bytes")  # type: ignore[arg-type]
    edwards = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(FormatError, match=_message("public key is neither RSA nor ECC")):
        public_key_fingerprint(edwards)


def test_load_public_pem_of_rsa_keeps_the_modulus_width(rsa_key: rsa.RSAPrivateKey) -> None:
    public = rsa_key.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    kind, n, e, curve = load_public_pem(pem)
    assert (kind, e, curve) == ("rsa", 65537, "")
    assert n == public.public_numbers().n.to_bytes(256, "big")
    odd = rsa.generate_private_key(65537, 1025).public_key()
    odd_pem = odd.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    assert len(load_public_pem(odd_pem)[1]) == 129


def test_load_public_pem_refuses_other_keys_and_curves() -> None:
    with pytest.raises(FormatError, match=_message("not a PEM public key")):
        load_public_pem(b"junk")
    with pytest.raises(FormatError, match=_message("not a PEM public key")):
        load_public_pem("junk")  # type: ignore[arg-type]
    for key in (ec.generate_private_key(ec.SECP521R1()).public_key(),
                ec.generate_private_key(ec.SECP256K1()).public_key(),
                ed25519.Ed25519PrivateKey.generate().public_key()):
        pem = key.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        with pytest.raises(FormatError, match=_message(
                "public key is neither RSA nor NIST P-256/P-384")):
            load_public_pem(pem)


def test_oaep_decryption_uses_the_keys_own_exponent() -> None:
    """The private exponent follows from e: a key with e = 3 decrypts only as e = 3."""
    key = rsa.generate_private_key(3, 2048)
    numbers = key.private_numbers()
    n, p = numbers.public_numbers.n.to_bytes(256, "big"), numbers.p.to_bytes(128, "big")
    ciphertext = rsa_oaep_encrypt(n, 3, b"seed", hash_name="sha256", label=b"IDENTITY\x00")
    assert rsa_oaep_decrypt(n, 3, p, ciphertext, hash_name="sha256", label=b"IDENTITY\x00"
                            ) == b"seed"
    with pytest.raises(IntegrityError, match=_message("RSA-OAEP decryption failed")):
        rsa_oaep_decrypt(n, 0, p, ciphertext, hash_name="sha256", label=b"IDENTITY\x00")
    signature = rsa_sign(n, 3, p, hashlib.sha256(b"m").digest(), hash_name="sha256",
                         scheme="rsapss")
    key.public_key().verify(signature, b"m", padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                            hashes.SHA256())
