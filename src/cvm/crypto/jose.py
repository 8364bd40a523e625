"""JOSE for the key broker: TEE key pairs (JWK, RFC 7517), the resource JWE (RFC 7516), and
signed attestation tokens (JWS/JWT, RFC 7515/7519) — through ``joserfc``, behind one door.

* A TEE key is EC P-256; a resource is wrapped to it as a flattened-JSON JWE with
  ``alg = ECDH-ES+A256KW``, ``enc = A256GCM`` (RSA TEE keys: ``RSA-OAEP-256``), the
  serialization Trustee's KBS answers ``GET /kbs/v0/resource`` with.
* Tokens are ES256 JWTs; the verifier checks the signature, the algorithm and ``exp``/``iat``
  against an injected clock. Any failure is one detail-free error of the project's tree.
"""

from __future__ import annotations

import json
from typing import Any

from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from cvm.errors import FormatError, IntegrityError, SignatureError

TEE_CURVE = "P-256"
TOKEN_ALGORITHM = "ES256"
_EC_WRAP = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}
_RSA_WRAP = {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
_JWE_REGISTRY = jwe.JWERegistry(algorithms=["ECDH-ES+A256KW", "RSA-OAEP-256", "A256GCM"])
_JWS_REGISTRY = jws.JWSRegistry(algorithms=[TOKEN_ALGORITHM])


class KeyPair:
    """An EC P-256 key pair (a TEE key or the broker's token key)."""

    def __init__(self, key: ECKey) -> None:
        self._key = key
        self._public: dict[str, str] | None = None

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(ECKey.generate_key(TEE_CURVE, private=True))

    @classmethod
    def from_private_jwk(cls, jwk: dict[str, Any]) -> KeyPair:
        try:
            return cls(ECKey.import_key(jwk))
        except (JoseError, ValueError, TypeError):
            raise FormatError("not an EC private JWK") from None

    def private_jwk(self) -> dict[str, Any]:
        return dict(self._key.as_dict(private=True))

    def public_jwk(self) -> dict[str, str]:
        if self._public is None:
            public = self._key.as_dict(private=False)
            self._public = {"kty": "EC", "crv": str(public["crv"]), "x": str(public["x"]),
                            "y": str(public["y"])}
        return dict(self._public)

    def decrypt(self, document: dict[str, Any]) -> bytes:
        """Open a flattened-JSON JWE wrapped to this key; IntegrityError if it does not."""
        try:
            opened = jwe.decrypt_json(document, self._key, registry=_JWE_REGISTRY)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError):
            raise IntegrityError("the JWE does not open with this key") from None
        return bytes(opened.plaintext or b"")

    def sign_token(self, claims: dict[str, Any], key_id: str) -> str:
        header = {"alg": TOKEN_ALGORITHM, "typ": "JWT", "kid": key_id}
        payload = json.dumps(claims, separators=(",", ":"), sort_keys=True)
        return jws.serialize_compact(header, payload, self._key, registry=_JWS_REGISTRY)

    def verify_token(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(header, claims) of an ES256 JWT this key signed; SignatureError otherwise."""
        try:
            verified = jws.deserialize_compact(token, self._key, registry=_JWS_REGISTRY)
            claims = json.loads(verified.payload)
        except (JoseError, ValueError, TypeError):
            raise SignatureError("the token's signature does not verify") from None
        if not isinstance(claims, dict):
            raise SignatureError("the token's payload is not a claims set")
        return dict(verified.protected), claims


def wrap_to(public_jwk: dict[str, str], plaintext: bytes) -> dict[str, Any]:
    """A flattened-JSON JWE of ``plaintext`` that only the holder of ``public_jwk`` opens."""
    try:
        if public_jwk.get("kty") == "RSA":
            key: ECKey | RSAKey = RSAKey.import_key(
                {k: public_jwk[k] for k in ("kty", "n", "e")})
            header = dict(_RSA_WRAP)
        else:
            key = ECKey.import_key({k: public_jwk[k] for k in ("kty", "crv", "x", "y")})
            header = dict(_EC_WRAP)
        message = jwe.FlattenedJSONEncryption(header, plaintext)
        message.add_recipient(None, key)
        return dict(jwe.encrypt_json(message, None, registry=_JWE_REGISTRY))
    except (JoseError, ValueError, TypeError, KeyError):
        raise FormatError("the TEE public key cannot receive a JWE") from None
