"""The dm-crypt block layer: a LUKS2 ``crypt`` segment read and written as plaintext.

Linux ``Documentation/admin-guide/device-mapper/dm-crypt.rst`` (``aes-xts-plain64``,
``sector_size``) and LUKS2 On-Disk Format Specification v1.1.4 section 3.3 (segments): the
sector at segment byte ``x`` (a multiple of ``sector_size``) is one XTS data unit with tweak
``x / 512 + iv_tweak`` (plain64 counts 512-byte units even for 4096-byte sectors; cryptsetup
never sets ``iv_large_sectors`` for LUKS2).

Public API: :func:`data_size` (the segment's size on a device, as cryptsetup checks it),
:class:`CryptDevice` (``size``, ``read(offset, size)``, ``write(offset, data)``
at any byte offset: partial sectors are read, decrypted, patched and re-encrypted; ``flush``).
"""

from __future__ import annotations

from cvm.crypto.xts import XtsCipher
from cvm.disk.storage import Storage
from cvm.errors import FormatError, UsageError
from cvm.formats.luks2.metadata import Segment

IV_UNIT_SIZE = 512


def data_size(device_size: int, segment: Segment) -> int:
    """The bytes of ``segment`` on a device of ``device_size`` bytes, checked as cryptsetup
    checks them before it activates a segment: a fixed-size segment must lie inside the
    device; a dynamic one takes the rest of the device as a block device shows it (whole
    512-byte sectors: a loop device over an image file drops a partial last one), which must be
    a whole number of the segment's sectors."""
    visible = device_size - device_size % IV_UNIT_SIZE
    if segment.offset > visible:
        raise FormatError(f"LUKS2 data segment starts at {segment.offset}, past the end of "
                          f"the {device_size}-byte device")
    if segment.size is not None:
        if segment.offset + segment.size > visible:
            raise FormatError(f"LUKS2 data segment of {segment.size} bytes at "
                              f"{segment.offset} does not fit the {device_size}-byte device")
        return segment.size
    size = visible - segment.offset
    if size % segment.sector_size:
        raise FormatError(f"LUKS2 data area of {size} bytes is not a whole number of "
                          f"{segment.sector_size}-byte sectors: the device was cut or extended")
    return size


class CryptDevice:
    """Plaintext view of one segment of ``storage`` under ``volume_key``."""

    def __init__(self, storage: Storage, segment: Segment, volume_key: bytes,
                 size: int | None = None, threads: int = 1) -> None:
        if segment.encryption != "aes-xts-plain64":
            raise UsageError(f"unsupported segment encryption {segment.encryption!r}")
        self._storage = storage
        self._segment = segment
        self._cipher = XtsCipher(volume_key, threads=threads)
        self.sector_size = segment.sector_size
        if size is None:
            size = data_size(storage.size(), segment)
        self._size = size - size % self.sector_size

    def size(self) -> int:
        return self._size

    def _check(self, offset: int, size: int) -> None:
        if offset < 0 or size < 0 or offset + size > self._size:
            raise UsageError(
                f"range {offset}+{size} lies outside the {self._size}-byte encrypted device"
            )

    def read_sectors(self, first: int, count: int) -> bytearray:
        """Decrypt ``count`` whole sectors starting at sector ``first`` (inside the device)."""
        start = first * self.sector_size
        self._check(start, count * self.sector_size)
        data = self._storage.read(self._segment.offset + start, count * self.sector_size)
        iv = start // IV_UNIT_SIZE + self._segment.iv_tweak
        return self._cipher.decrypt_sectors(data, iv, self.sector_size)

    def seal_sectors(self, first: int, plaintext: bytes | bytearray | memoryview
                     ) -> tuple[int, bytearray]:
        """Encrypt whole sectors for sector ``first``: (storage offset, ciphertext), unwritten
        (so a caller may overlap encryption with the previous write). The sectors must lie
        inside the device: a sector number before the segment would reach the LUKS2 header."""
        start = first * self.sector_size
        self._check(start, memoryview(plaintext).nbytes)
        iv = start // IV_UNIT_SIZE + self._segment.iv_tweak
        return (self._segment.offset + start,
                self._cipher.encrypt_sectors(plaintext, iv, self.sector_size))

    def store(self, offset: int, ciphertext: bytes | bytearray) -> None:
        """Write ciphertext made by :meth:`seal_sectors`."""
        self._storage.write(offset, ciphertext)

    def write_sectors(self, first: int, plaintext: bytes | bytearray | memoryview) -> None:
        """Encrypt whole sectors of ``plaintext`` and write them from sector ``first``."""
        self.store(*self.seal_sectors(first, plaintext))

    def read(self, offset: int, size: int) -> bytes | bytearray:
        """Plaintext bytes at any offset (a fresh buffer the caller owns)."""
        self._check(offset, size)
        if size == 0:
            return b""
        first = offset // self.sector_size
        last = (offset + size - 1) // self.sector_size
        data = self.read_sectors(first, last - first + 1)
        skip = offset - first * self.sector_size
        if skip == 0 and len(data) == size:
            return data
        return bytes(memoryview(data)[skip : skip + size])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self._check(offset, len(view))
        if not view:
            return
        ss = self.sector_size
        first = offset // ss
        end = offset + len(view)
        last = (end - 1) // ss
        if offset % ss == 0 and end % ss == 0:
            self.write_sectors(first, view)
            return
        buffer = bytearray(ss * (last - first + 1))
        if offset % ss:
            buffer[:ss] = self.read_sectors(first, 1)
        if end % ss and (last != first or not offset % ss):
            buffer[-ss:] = self.read_sectors(last, 1)
        skip = offset - first * ss
        buffer[skip : skip + len(view)] = view
        self.write_sectors(first, buffer)

    def flush(self) -> None:
        self._storage.flush()
