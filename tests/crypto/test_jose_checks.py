"""The resource JWE's checks, each pinned: the algorithms the header names, the JWE AAD member,
and the detail-free errors with their exact text. Found by the mutation run of
docs/mutation/crypto.md.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from joserfc import jwe
from joserfc.jwk import ECKey

from cvm.crypto import jose
from cvm.crypto.jose import KeyPair, wrap_to
from cvm.errors import FormatError, IntegrityError, SignatureError, UsageError

SECRET = b"resource \x00\xff" * 4
REGISTRY = jwe.JWERegistry(algorithms=["ECDH-ES+A256KW", "A256GCM"])


def _forged(key: KeyPair, **changes: Any) -> dict[str, Any]:
    """A JWE built as ECDH-ES+A256KW with A256GCM whose protected header says ``changes``."""
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    recipient = ec.EllipticCurvePublicNumbers(
        int.from_bytes(jose._unb64(key.public_jwk()["x"]), "big"),
        int.from_bytes(jose._unb64(key.public_jwk()["y"]), "big"), ec.SECP256R1()).public_key()
    kek = jose._concat_kdf(ephemeral.exchange(ec.ECDH(), recipient), "ECDH-ES+A256KW")
    cek = os.urandom(32)
    header = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM",
              "epk": jose._ec_jwk(ephemeral.public_key()), **changes}
    return jose._seal(header, aes_key_wrap(kek, cek), cek, SECRET)


def test_a_header_naming_another_algorithm_is_refused_even_if_the_bytes_would_open() -> None:
    key = KeyPair.generate()
    assert key.decrypt(_forged(key)) == SECRET
    for changes in ({"enc": "A128GCM"}, {"alg": "ECDH-ES+A128KW"}, {"alg": "ECDH-ES"}):
        with pytest.raises(IntegrityError, match=r"^the JWE does not open with this key$"):
            key.decrypt(_forged(key, **changes))


def test_the_aad_member_is_authenticated_after_the_protected_header() -> None:
    """RFC 7516 §5.1 step 14: AAD = ASCII(protected) ‖ '.' ‖ ASCII(BASE64URL(aad))."""
    key = KeyPair.generate()
    message = jwe.FlattenedJSONEncryption({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}, SECRET,
                                          aad=b"bound context")
    message.add_recipient(None, ECKey.import_key(key.public_jwk()))
    document = dict(jwe.encrypt_json(message, None, registry=REGISTRY))
    assert "aad" in document
    assert key.decrypt(document) == SECRET
    with pytest.raises(IntegrityError, match=r"^AES-256-GCM authentication failed$"):
        key.decrypt({**document, "aad": jose._b64(b"other context")})


def test_a_public_key_cannot_open_and_says_so() -> None:
    key = KeyPair.generate()
    public_only = KeyPair(ECKey.import_key(key.public_jwk()))
    with pytest.raises(UsageError, match=r"^a public key cannot open a JWE$"):
        public_only.decrypt(wrap_to(key.public_jwk(), SECRET))


def test_the_refusals_name_what_failed() -> None:
    with pytest.raises(FormatError, match=r"^the TEE public key cannot receive a JWE$"):
        wrap_to({"kty": "oct", "k": "AAAA"}, SECRET)
    for bits in (0, 7, 264):
        with pytest.raises(UsageError,
                           match=r"^the Concat KDF here derives 8 to 256 bits, whole bytes$"):
            jose._concat_kdf(bytes(32), "A256GCM", bits=bits)
    assert len(jose._concat_kdf(bytes(32), "A256GCM", bits=8)) == 1
    assert len(jose._concat_kdf(bytes(32), "A256GCM", bits=256)) == 32
    with pytest.raises(FormatError, match=r"^not an EC private JWK$"):
        KeyPair.from_private_jwk({"kty": "EC", "crv": "P-256"})


def test_a_token_is_a_jwt_of_compact_sorted_claims() -> None:
    """The token header says ES256, JWT and the key id; the payload is the claims as compact
    JSON with sorted keys, so the same claims always give the same signed bytes."""
    key = KeyPair.generate()
    token = key.sign_token({"b": 1, "a": [1, 2]}, "kid-1")
    header, payload, _ = token.split(".")
    assert jose._unb64(payload) == b'{"a":[1,2],"b":1}'
    assert json.loads(jose._unb64(header)) == {"alg": "ES256", "typ": "JWT", "kid": "kid-1"}
    verified_header, claims = key.verify_token(token)
    assert verified_header == {"alg": "ES256", "typ": "JWT", "kid": "kid-1"}
    assert claims == {"a": [1, 2], "b": 1}


def test_a_token_refusal_says_which_part_failed() -> None:
    key = KeyPair.generate()
    token = key.sign_token({"a": 1}, "kid-1")
    with pytest.raises(SignatureError, match=r"^the token's signature does not verify$"):
        KeyPair.generate().verify_token(token)
    with pytest.raises(SignatureError, match=r"^the token's signature does not verify$"):
        key.verify_token(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    not_claims = key.sign_token([1, 2], "kid-1")  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match=r"^the token's payload is not a claims set$"):
        key.verify_token(not_claims)
