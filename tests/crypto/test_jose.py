"""The resource JWE: what cvm builds, joserfc opens; what joserfc builds, cvm opens; nothing
else opens."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from joserfc import jwe
from joserfc.jwk import ECKey, RSAKey

from cvm.crypto import jose
from cvm.crypto.jose import KeyPair, wrap_to
from cvm.errors import FormatError, IntegrityError, UsageError

REGISTRY = jwe.JWERegistry(algorithms=["ECDH-ES+A256KW", "RSA-OAEP-256", "A256GCM",
                                       "A128GCM", "ECDH-ES"])
SECRET = b"the volume key \x00\xff" * 3


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _joserfc_wrap(key: KeyPair, header: dict[str, Any] | None = None,
                  plaintext: bytes = SECRET) -> dict[str, Any]:
    public = ECKey.import_key(key.public_jwk())
    message = jwe.FlattenedJSONEncryption(header or {"alg": "ECDH-ES+A256KW",
                                                     "enc": "A256GCM"}, plaintext)
    message.add_recipient(None, public)
    return dict(jwe.encrypt_json(message, None, registry=REGISTRY))


def test_joserfc_opens_what_cvm_wraps_to_an_ec_key() -> None:
    key = KeyPair.generate()
    document = wrap_to(key.public_jwk(), SECRET)
    assert set(document) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
    header = json.loads(_unb64(document["protected"]))
    assert (header["alg"], header["enc"], header["epk"]["crv"]) == ("ECDH-ES+A256KW", "A256GCM",
                                                                    "P-256")
    private = ECKey.import_key(key.private_jwk())
    opened = jwe.decrypt_json(document, private, registry=REGISTRY)
    assert opened.plaintext == SECRET
    assert key.decrypt(document) == SECRET


def test_joserfc_opens_what_cvm_wraps_to_an_rsa_key() -> None:
    private = RSAKey.generate_key(2048, private=True)
    public = {k: str(v) for k, v in private.as_dict(private=False).items()}
    document = wrap_to(public, SECRET)
    assert json.loads(_unb64(document["protected"])) == {"alg": "RSA-OAEP-256",
                                                         "enc": "A256GCM"}
    assert jwe.decrypt_json(document, private, registry=REGISTRY).plaintext == SECRET


def test_cvm_opens_what_joserfc_wraps() -> None:
    key = KeyPair.generate()
    assert key.decrypt(_joserfc_wrap(key)) == SECRET
    with_parties = _joserfc_wrap(key, {"alg": "ECDH-ES+A256KW", "enc": "A256GCM",
                                       "apu": _b64(b"Alice"), "apv": _b64(b"Bob")})
    assert key.decrypt(with_parties) == SECRET


def test_the_concat_kdf_of_rfc_7518_appendix_c() -> None:
    """RFC 7518 appendix C: ECDH-ES with A128GCM, PartyUInfo "Alice", PartyVInfo "Bob"."""
    shared = bytes([158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156,
                    251, 49, 110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144,
                    196])
    derived = jose._concat_kdf(shared, "A128GCM", b"Alice", b"Bob", bits=128)
    assert derived == bytes([86, 170, 141, 234, 248, 35, 109, 32, 92, 34, 40, 205, 113, 167,
                             16, 26])


def test_every_member_is_authenticated() -> None:
    key = KeyPair.generate()
    document = wrap_to(key.public_jwk(), SECRET)
    for member in ("encrypted_key", "iv", "ciphertext", "tag"):
        raw = bytearray(_unb64(document[member]))
        raw[len(raw) // 2] ^= 1
        with pytest.raises(IntegrityError):
            key.decrypt({**document, member: _b64(bytes(raw))})
    header = json.loads(_unb64(document["protected"]))
    reordered = _b64(json.dumps(dict(reversed(list(header.items())))).encode())
    with pytest.raises(IntegrityError):  # the same header, other bytes: the AAD differs
        key.decrypt({**document, "protected": reordered})
    with pytest.raises(IntegrityError):
        key.decrypt({**document, "aad": _b64(b"more")})
    with pytest.raises(IntegrityError):
        KeyPair.generate().decrypt(document)


def test_only_ecdh_es_a256kw_with_a256gcm_and_one_recipient_opens() -> None:
    key = KeyPair.generate()
    document = wrap_to(key.public_jwk(), SECRET)
    header = json.loads(_unb64(document["protected"]))

    def with_header(**changes: Any) -> dict[str, Any]:
        return {**document, "protected": _b64(json.dumps({**header, **changes}).encode())}

    refused = [
        with_header(alg="ECDH-ES"), with_header(enc="A128GCM"), with_header(crit=["exp"]),
        with_header(epk={**header["epk"], "crv": "P-384"}),
        with_header(epk={**header["epk"], "y": header["epk"]["x"]}),  # not on the curve
        {k: v for k, v in document.items() if k != "tag"},
        {**document, "recipients": []},
        {**document, "iv": _b64(b"\x00" * 16)},
        {**document, "tag": document["tag"] + "="},
        _joserfc_wrap(key, {"alg": "ECDH-ES", "enc": "A256GCM"}),
        [document],
    ]
    theirs = _joserfc_wrap(key)  # epk in the per-recipient unprotected header
    assert "epk" in theirs["header"]
    refused += [{**theirs, "header": {**theirs["header"], "enc": "A256GCM"}},  # not disjoint
                {**theirs, "unprotected": {"epk": theirs["header"]["epk"]}},
                {**theirs, "header": []},
                {**theirs, "header": {"epk": wrap_to(key.public_jwk(), b"")["protected"]}}]
    for candidate in refused:
        with pytest.raises(IntegrityError):
            key.decrypt(candidate)  # type: ignore[arg-type]


@pytest.mark.parametrize("jwk", [
    {"kty": "EC", "crv": "P-384", "x": _b64(b"\x01" * 48), "y": _b64(b"\x01" * 48)},
    {"kty": "EC", "crv": "P-256", "x": _b64(b"\x01" * 32), "y": _b64(b"\x02" * 32)},
    {"kty": "EC", "crv": "P-256", "x": _b64(b"\x01" * 31)},
    {"kty": "EC", "crv": "P-256", "x": "a=", "y": "b"},
    {"kty": "RSA", "n": _b64(b"\xc1" * 128), "e": "AQAB"},
    {"kty": "oct", "k": "AAAA"},
])
def test_keys_that_cannot_receive_a_jwe(jwk: dict[str, str]) -> None:
    with pytest.raises(FormatError, match="cannot receive a JWE"):
        wrap_to(jwk, SECRET)


def test_the_concat_kdf_bounds() -> None:
    assert len(jose._concat_kdf(b"z" * 32, "A128GCM", bits=8)) == 1
    assert len(jose._concat_kdf(b"z" * 32, "A128GCM", bits=256)) == 32
    for bits in (0, 4, 12, 264):
        with pytest.raises(UsageError, match="8 to 256 bits"):
            jose._concat_kdf(b"z" * 32, "A128GCM", bits=bits)


def test_a_p256_point_is_named_p256_with_32_byte_coordinates() -> None:
    """The curve's name and the coordinates' encoding are checked, not only the point."""
    jwk = KeyPair.generate().public_jwk()
    with pytest.raises(FormatError):
        wrap_to({**jwk, "crv": "P-384"}, SECRET)
    with pytest.raises(FormatError):
        wrap_to({**jwk, "kty": "ECX"}, SECRET)
    while True:  # a key whose x has a leading zero byte: 31 bytes would name the same point
        short = KeyPair.generate().public_jwk()
        if _unb64(short["x"])[0] == 0:
            break
    assert wrap_to(short, SECRET)
    with pytest.raises(FormatError):
        wrap_to({**short, "x": _b64(_unb64(short["x"])[1:])}, SECRET)
