"""Whole-image conversions: a plaintext image into a new LUKS2 image, and back.

``encrypt_image`` writes a LUKS2 header (:meth:`~cvm.disk.volume.Luks2Volume.format`) and then
the plaintext, sector by sector through the dm-crypt layer, into the data segment of a new
output file; the plaintext is never written to the output. ``decrypt_image`` reads the data
segment through the same layer; its output holds the volume's plaintext and is created private
(0600), as is the LUKS2 image. Both stream in :data:`CHUNK_SIZE` pieces and report progress in
bytes through a callback, into a new file beside the output that replaces it only once whole
(:func:`cvm.files.staged`): a failure (a full disk) leaves the previous output as it was.

Public API: :func:`encrypt_image`, :func:`decrypt_image`, :func:`copy_into`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from cvm.disk.dm_crypt import CryptDevice
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import DEFAULT_DATA_OFFSET, Announce, Luks2Volume, quiet
from cvm.errors import UsageError
from cvm.files import staged

CHUNK_SIZE = 8 << 20
Progress = Callable[[int], None]


def _ignore(_: int) -> None:
    return None


def copy_into(source: BinaryIO, device: CryptDevice, size: int,
              progress: Progress = _ignore) -> None:
    """Encrypt ``size`` bytes of ``source`` into ``device`` from offset 0, zero-padding the
    last sector. Each chunk is written by a background thread while the next is encrypted."""
    offset = 0
    with ThreadPoolExecutor(1, thread_name_prefix="cvm-writer") as writer:
        pending: Future[None] | None = None
        while offset < size:
            wanted = min(CHUNK_SIZE, size - offset)
            chunk = source.read(wanted)
            if len(chunk) < wanted:  # a file's read is short only at its end
                raise UsageError(f"the input ended after {offset + len(chunk)} of {size} "
                                 "bytes")
            if len(chunk) % device.sector_size:
                chunk += bytes(device.sector_size - len(chunk) % device.sector_size)
            sealed = device.seal_sectors(offset // device.sector_size, chunk)
            if pending is not None:
                pending.result()
            pending = writer.submit(device.store, *sealed)
            offset += len(chunk)
            progress(len(chunk))
        if pending is not None:
            pending.result()


def encrypt_image(plain: Path, out: Path, passphrase: bytes, kdf: KdfSpec,
                  sector_size: int = 4096, volume_key: bytes | None = None, label: str = "",
                  progress: Progress = _ignore, threads: int = 2,
                  announce: Announce = quiet,
                  random: Callable[[int], bytes] = os.urandom) -> Luks2Volume:
    """A new LUKS2 image ``out`` whose segment holds ``plain`` (padded to whole sectors);
    ``announce`` hears the key-derivation steps (one derivation: the new volume key is kept);
    ``random`` draws the volume key (unless given), the UUID, the salts and the keyslot's
    stripes (a seeded stream makes the image reproducible)."""
    if out.resolve() == plain.resolve():
        raise UsageError("the output must not be the plaintext input")
    size = plain.stat().st_size
    data_size = -(-size // sector_size) * sector_size
    with staged(out) as new, FileStorage(new) as storage:
        storage.truncate(DEFAULT_DATA_OFFSET + data_size)
        key = volume_key if volume_key is not None else random(64)
        volume = Luks2Volume.format(storage, passphrase, kdf, volume_key=key,
                                    sector_size=sector_size, label=label, announce=announce,
                                    random=random)
        device = CryptDevice(storage, volume.segment, key, threads=threads)
        with plain.open("rb") as source:
            copy_into(source, device, size, progress)
    return volume


def decrypt_image(image: Path, out: Path, volume_key: bytes,
                  progress: Progress = _ignore, threads: int = 2) -> int:
    """Write the plaintext data segment of ``image`` to ``out``; returns its size."""
    with FileStorage(image, read_only=True) as storage:
        volume = Luks2Volume.open(storage)
        device = volume.data_device(volume_key, threads=threads)
        size = device.size()
        with staged(out) as new, new.open("r+b") as sink:
            for offset in range(0, size, CHUNK_SIZE):
                count = min(CHUNK_SIZE, size - offset)
                sink.write(device.read(offset, count))
                progress(count)
    return size

