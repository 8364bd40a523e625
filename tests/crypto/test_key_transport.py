"""Key release to an attested VM: ECDH-ES P-384 + KDFe + AES-256-GCM."""

from __future__ import annotations

import hashlib
import os

import pytest

from cvm.crypto.key_transport import (
    HEADER_SIZE,
    ephemeral_scalar,
    public_point,
    report_data,
    unwrap,
    wrap,
)
from cvm.errors import FormatError, IntegrityError, UsageError


def test_only_the_recipient_opens_it() -> None:
    scalar = ephemeral_scalar()
    point = public_point(scalar)
    blob = wrap(point, b"k" * 32, os.urandom)
    assert len(blob) == HEADER_SIZE + 32 and b"k" * 8 not in blob
    assert unwrap(scalar, blob) == b"k" * 32
    with pytest.raises(IntegrityError):
        unwrap(ephemeral_scalar(), blob)


@pytest.mark.parametrize("offset", [0x08, 0x0A, 0x0C, 0x40, 0x6C, 0x78, HEADER_SIZE + 3])
def test_any_changed_byte_is_refused(offset: int) -> None:
    scalar = ephemeral_scalar()
    blob = bytearray(wrap(public_point(scalar), b"k" * 32, os.urandom))
    blob[offset] ^= 1
    with pytest.raises((IntegrityError, FormatError)):
        unwrap(scalar, bytes(blob))


def test_report_data_binds_nonce_and_key() -> None:
    point = public_point(ephemeral_scalar())
    nonce = os.urandom(32)
    assert report_data(nonce, point) == hashlib.sha512(nonce + point[0] + point[1]).digest()
    assert report_data(os.urandom(32), point) != report_data(nonce, point)
    with pytest.raises(UsageError):
        report_data(nonce, (b"x", b"y"))
    with pytest.raises(FormatError):
        unwrap(ephemeral_scalar(), b"short")
