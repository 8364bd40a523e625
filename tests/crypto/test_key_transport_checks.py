"""Key release blobs (crypto/key_transport.py) opened by an independent implementation.

A round trip cannot see a derivation wrong on both sides (KDFe's label, party order or size, the
AAD's extent), so the blob is opened here from its documented layout with the standard
library's SHA-384 and ``cryptography``'s ECDH and AES-GCM only; then each refusal is pinned with
its error class and message. Found by the mutation run of docs/mutation/crypto.md.
"""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cvm.crypto import key_transport
from cvm.crypto.key_transport import HEADER_SIZE, public_point, unwrap, wrap
from cvm.errors import FormatError, IntegrityError, UsageError


def _fixed_iv(size: int) -> bytes:
    return bytes(range(1, size + 1))


def _open_independently(scalar: bytes, blob: bytes) -> bytes:
    """TPM 2.0 Part 1 §11.4.10.3 KDFe with SHA-384 and the layout of the module docstring."""
    magic, curve, size = struct.unpack_from("<8sHH", blob, 0)
    assert (magic, curve) == (b"CVMKREL1", 0x0004)
    sender_x, sender_y = blob[0x0C:0x3C], blob[0x3C:0x6C]
    iv, tag = blob[0x6C:0x78], blob[0x78:0x88]
    assert len(blob) == 0x88 + size
    private = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP384R1())
    sender = ec.EllipticCurvePublicNumbers(
        int.from_bytes(sender_x, "big"), int.from_bytes(sender_y, "big"), ec.SECP384R1()
    ).public_key()
    z = private.exchange(ec.ECDH(), sender)
    recipient_x = private.public_key().public_numbers().x.to_bytes(48, "big")
    block = hashlib.sha384(
        (1).to_bytes(4, "big") + z + b"CVM KEY RELEASE\x00" + sender_x + recipient_x
    ).digest()
    key = block[:32]
    return AESGCM(key).decrypt(iv, blob[0x88:] + tag, blob[:0x78])


def test_the_blob_opens_with_the_documented_derivation_and_layout() -> None:
    scalar = key_transport.ephemeral_scalar()
    assert len(scalar) == 48
    point = public_point(scalar)
    assert len(point[0]) == len(point[1]) == 48
    secret = os.urandom(40)
    blob = wrap(point, secret, _fixed_iv)
    assert blob[0x6C:0x78] == bytes(range(1, 13))
    assert struct.unpack_from("<H", blob, 0x0A)[0] == 40
    assert _open_independently(scalar, blob) == secret
    assert unwrap(scalar, blob) == secret


def test_the_sender_key_is_fresh_for_every_blob() -> None:
    point = public_point(key_transport.ephemeral_scalar())
    first, second = (wrap(point, b"s", _fixed_iv) for _ in range(2))
    assert first[0x0C:0x6C] != second[0x0C:0x6C]


def test_a_secret_is_1_to_65535_bytes() -> None:
    scalar = key_transport.ephemeral_scalar()
    point = public_point(scalar)
    largest = os.urandom(0xFFFF)
    assert unwrap(scalar, wrap(point, largest, _fixed_iv)) == largest
    assert unwrap(scalar, wrap(point, b"x", _fixed_iv)) == b"x"
    for size in (0, 0x10000):
        with pytest.raises(UsageError, match=r"^a released secret is 1\.\.65535 bytes$"):
            wrap(point, bytes(size), _fixed_iv)


def test_report_data_refuses_a_coordinate_of_the_wrong_size() -> None:
    x, y = public_point(key_transport.ephemeral_scalar())
    key_transport.report_data(b"n", (x, y))
    for point in ((x[:47], y), (x, y[:47]), (x + b"\0", y), (x, y + b"\0")):
        with pytest.raises(UsageError, match=r"^a P-384 point has two 48-byte coordinates$"):
            key_transport.report_data(b"n", point)


def test_header_magic_curve_and_size_are_each_refused_with_their_message() -> None:
    scalar = key_transport.ephemeral_scalar()
    blob = wrap(public_point(scalar), b"k" * 16, _fixed_iv)
    for offset in (0x00, 0x07, 0x08, 0x09):
        bad = bytearray(blob)
        bad[offset] ^= 0x40
        with pytest.raises(FormatError, match=r"^key release blob: bad magic or curve$"):
            unwrap(scalar, bytes(bad))
    with pytest.raises(FormatError,
                       match=r"^key release blob: 17 ciphertext bytes, header says 16$"):
        unwrap(scalar, blob + b"\0")
    with pytest.raises(FormatError,
                       match=r"^key release blob: 15 ciphertext bytes, header says 16$"):
        unwrap(scalar, blob[:-1])
    with pytest.raises(FormatError, match=rf"^key release blob: {HEADER_SIZE - 1} bytes, "
                                          rf"header needs {HEADER_SIZE}$"):
        unwrap(scalar, blob[: HEADER_SIZE - 1])


def test_a_header_of_exactly_its_size_is_read_and_then_fails_authentication() -> None:
    scalar = key_transport.ephemeral_scalar()
    blob = bytearray(wrap(public_point(scalar), b"k", _fixed_iv)[:HEADER_SIZE])
    blob[0x0A:0x0C] = bytes(2)  # a zero-byte secret: the size agrees with the blob
    with pytest.raises(IntegrityError, match=r"^AES-256-GCM authentication failed$"):
        unwrap(scalar, bytes(blob))


@pytest.mark.parametrize("offset", [0x0C, 0x3B, 0x6C, 0x77, 0x78, 0x87])
def test_every_header_byte_up_to_the_tag_is_authenticated(offset: int) -> None:
    scalar = key_transport.ephemeral_scalar()
    blob = bytearray(wrap(public_point(scalar), b"k" * 16, _fixed_iv))
    blob[offset] ^= 1
    with pytest.raises(IntegrityError):
        unwrap(scalar, bytes(blob))
