"""TPM2B sized buffers and big-endian cursors for TPM 2.0 marshalling.

TCG "TPM 2.0 Library, Part 2: Structures", revision 1.59, section 10.4 (TPM2B_DIGEST,
TPM2B_DATA, TPM2B_NAME, ... all ``u16 size ‖ BYTE buffer[size]``, Tables 80–86) and Part 1
section 18 (canonical big-endian marshalling). Every TPM structure module reads through a
:class:`~cvm.wire.Reader` made by :func:`reader` and writes through :func:`writer`.
"""

from __future__ import annotations

from cvm.errors import FormatError
from cvm.wire import Reader, Writer

TPM2B_MAX = 0xFFFF


def reader(data: bytes | bytearray | memoryview, what: str) -> Reader:
    """A big-endian cursor over ``data`` for the structure named ``what``."""
    return Reader(data, what, endian="big")


def writer() -> Writer:
    """A big-endian writer."""
    return Writer(endian="big")


def read_tpm2b(source: Reader, field: str, max_size: int = TPM2B_MAX) -> bytes:
    """Read ``u16 size ‖ buffer``; refuse a size above ``max_size`` (the union's maximum)."""
    return source.sized(2, field, max_size)


def put_tpm2b(sink: Writer, data: bytes, max_size: int = TPM2B_MAX) -> Writer:
    """Write ``u16 size ‖ data``."""
    if len(data) > max_size:
        raise FormatError(f"TPM2B of {len(data)} bytes exceeds the maximum {max_size}")
    return sink.sized(data, 2)


def tpm2b(data: bytes, max_size: int = TPM2B_MAX) -> bytes:
    """``u16 size ‖ data`` as bytes."""
    return put_tpm2b(writer(), data, max_size).to_bytes()


def parse_tpm2b(data: bytes, what: str, max_size: int = TPM2B_MAX) -> bytes:
    """The buffer of a complete TPM2B (no trailing bytes)."""
    source = reader(data, what)
    value = read_tpm2b(source, what, max_size)
    source.expect_end()
    return value
