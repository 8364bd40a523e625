"""JOSE for the key broker: TEE key pairs (JWK, RFC 7517), the resource JWE (RFC 7516), and
signed attestation tokens (JWS/JWT, RFC 7515/7519), behind one door.

* A TEE key is EC P-256; a resource is wrapped to it as a flattened-JSON JWE with
  ``alg = ECDH-ES+A256KW``, ``enc = A256GCM`` (RSA TEE keys: ``RSA-OAEP-256``), the
  serialization Trustee's KBS answers ``GET /kbs/v0/resource`` with. The JWE is built and
  opened here from ``cryptography``'s primitives (RFC 7518 sections 4.6 and 5.3: ECDH, the
  Concat KDF, AES key wrap, AES-GCM over the protected header): one wrap is a key agreement and
  two AES calls, and a general JOSE library's checks around them cost the broker four times
  that per release. ``joserfc`` opens what this builds and builds what this opens (tests).
* Tokens are ES256 JWTs through ``joserfc``; the verifier checks the signature, the algorithm
  and ``exp``/``iat`` against an injected clock. Any failure is one detail-free error of the
  project's tree.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from cvm.crypto import aead
from cvm.errors import FormatError, IntegrityError, SignatureError, UsageError

TEE_CURVE = "P-256"
TOKEN_ALGORITHM = "ES256"
_EC_WRAP = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}
_RSA_WRAP = {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
_JWE_MEMBERS = {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
_JWE_OPTIONAL = {"aad", "unprotected", "header"}
_HEADER_PARAMETERS = {"alg", "enc", "epk", "apu", "apv", "kid", "typ", "cty"}
_COORDINATE = 32  # P-256
MIN_RSA_BITS = 2048
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
        private = self._key.private_key
        if private is None:
            raise UsageError("a public key cannot open a JWE")
        try:
            return _open(private, document)
        except (ValueError, TypeError, KeyError, InvalidUnwrap, UsageError):
            raise IntegrityError("the JWE does not open with this key") from None

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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: object) -> bytes:
    if not isinstance(text, str) or "=" in text:
        raise ValueError("not base64url without padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _concat_kdf(shared: bytes, algorithm: str, apu: bytes = b"", apv: bytes = b"",
                bits: int = 256) -> bytes:
    """RFC 7518 section 4.6.2: the key-wrapping key from the ECDH secret (NIST SP 800-56A's
    single-step KDF with SHA-256; at most one hash block, so one round)."""
    def field(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    if not 0 < bits <= 256 or bits % 8:
        raise UsageError("the Concat KDF here derives 8 to 256 bits, whole bytes")
    other = field(algorithm.encode()) + field(apu) + field(apv) + struct.pack(">I", bits)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"\x00\x00\x00\x01" + shared + other)
    return digest.finalize()[:bits // 8]


def _ec_public(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != TEE_CURVE:
        raise ValueError("not an EC P-256 key")
    x, y = _unb64(jwk["x"]), _unb64(jwk["y"])
    if len(x) != _COORDINATE or len(y) != _COORDINATE:
        raise ValueError("a P-256 coordinate is 32 bytes")
    return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                         ec.SECP256R1()).public_key()  # on the curve, or refused


def _ec_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    return {"kty": "EC", "crv": TEE_CURVE, "x": _b64(numbers.x.to_bytes(_COORDINATE, "big")),
            "y": _b64(numbers.y.to_bytes(_COORDINATE, "big"))}


def _seal(header: dict[str, Any], encrypted_key: bytes, cek: bytes,
          plaintext: bytes) -> dict[str, Any]:
    protected = _b64(json.dumps(header, separators=(",", ":")).encode())
    iv = os.urandom(aead.IV_SIZE)
    ciphertext, tag = aead.encrypt(cek, iv, plaintext, protected.encode())
    return {"protected": protected, "encrypted_key": _b64(encrypted_key), "iv": _b64(iv),
            "ciphertext": _b64(ciphertext), "tag": _b64(tag)}


def wrap_to(public_jwk: dict[str, str], plaintext: bytes) -> dict[str, Any]:
    """A flattened-JSON JWE of ``plaintext`` that only the holder of ``public_jwk`` opens."""
    cek = os.urandom(aead.KEY_SIZE)
    try:
        if public_jwk.get("kty") == "RSA":
            n, e = (int.from_bytes(_unb64(public_jwk[k]), "big") for k in ("n", "e"))
            key = rsa.RSAPublicNumbers(e, n).public_key()
            if key.key_size < MIN_RSA_BITS:
                raise ValueError("RSA key too small")
            wrapped = key.encrypt(cek, padding.OAEP(padding.MGF1(hashes.SHA256()),
                                                    hashes.SHA256(), None))
            return _seal(dict(_RSA_WRAP), wrapped, cek, plaintext)
        recipient = _ec_public(public_jwk)
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        kek = _concat_kdf(ephemeral.exchange(ec.ECDH(), recipient), _EC_WRAP["alg"])
        header = {**_EC_WRAP, "epk": _ec_jwk(ephemeral.public_key())}
        return _seal(header, aes_key_wrap(kek, cek), cek, plaintext)
    except (ValueError, TypeError, KeyError):
        raise FormatError("the TEE public key cannot receive a JWE") from None


def _open(private: ec.EllipticCurvePrivateKey, document: dict[str, Any]) -> bytes:
    """RFC 7516 section 5.2 for one recipient, ECDH-ES+A256KW with A256GCM and nothing else."""
    if not isinstance(document, dict) or set(document) - _JWE_MEMBERS - _JWE_OPTIONAL \
            or not set(document) >= _JWE_MEMBERS:
        raise ValueError("not a flattened JWE of one recipient")
    protected = document["protected"]
    header = json.loads(_unb64(protected))
    for member in ("unprotected", "header"):  # shared and per-recipient unprotected headers
        more = document.get(member, {})
        if not isinstance(header, dict) or not isinstance(more, dict) or set(more) & set(header):
            raise ValueError("the header parameters must be objects, and disjoint")
        header = {**header, **more}
    if set(header) - _HEADER_PARAMETERS:
        raise ValueError("unexpected header parameters")
    if header.get("alg") != _EC_WRAP["alg"] or header.get("enc") != _EC_WRAP["enc"]:
        raise ValueError("unexpected algorithms")
    apu, apv = (_unb64(header[k]) if k in header else b"" for k in ("apu", "apv"))
    kek = _concat_kdf(private.exchange(ec.ECDH(), _ec_public(header["epk"])),
                      _EC_WRAP["alg"], apu, apv)
    cek = aes_key_unwrap(kek, _unb64(document["encrypted_key"]))
    aad = protected.encode()
    if "aad" in document:
        aad += b"." + _b64(_unb64(document["aad"])).encode()
    return aead.decrypt(cek, _unb64(document["iv"]), _unb64(document["ciphertext"]),
                        _unb64(document["tag"]), aad)
