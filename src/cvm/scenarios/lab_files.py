"""The host's copy of an image bundle, and what the host reads of its files.

The host is handed everything of a bundle but ``owner/`` (:func:`host_copy`); a sparse disk
image stays sparse in the copy and costs no I/O where it has holes, and the canary scan reads
each file as its data extents (:func:`file_extents`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

HOST_FILES = ("disk.img", "image.json", "reference-values.json", "vtpm-state.bin",
              "host-vtpm-state.key", "firmware")
COPY_BLOCK_BYTES = 1 << 16


def host_copy(bundle: Path, into: Path) -> Path:
    """What the host is handed of ``bundle``: everything but ``owner/``."""
    into.mkdir(parents=True)
    for name in HOST_FILES:
        source = bundle / name
        if source.is_dir():
            shutil.copytree(source, into / name, copy_function=sparse_copy)
        elif source.exists():
            sparse_copy(source, into / name)
    return into


def sparse_copy(source: Path | str, target: Path | str) -> None:
    """Copy a file, leaving holes where the source has holes (a disk image's empty file system
    costs nothing): only the source's data extents are read (SEEK_DATA / SEEK_HOLE), or, where
    the file system cannot say, every block that is not all zeros."""
    with open(source, "rb") as reader, open(target, "wb") as writer:
        size = os.fstat(reader.fileno()).st_size
        for start, end in _extents(reader.fileno(), size):
            reader.seek(start)
            writer.seek(start)
            at = start
            while at < end and (block := reader.read(min(COPY_BLOCK_BYTES, end - at))):
                at += len(block)
                if block.count(0) == len(block):
                    writer.seek(len(block), os.SEEK_CUR)
                else:
                    writer.write(block)
        writer.truncate(size)


def _extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The data extents of an open file: (start, end) pairs."""
    if not hasattr(os, "SEEK_DATA"):
        return [(0, size)]
    extents, offset = [], 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after offset
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        extents.append((start, end))
        offset = end
    return extents


def file_extents(path: Path) -> list[tuple[int, bytes]]:
    """A file's bytes as the host reads them, as (offset, data) for each of its data extents
    (a sparse disk image's holes hold nothing and cost no I/O)."""
    with open(path, "rb") as file:
        extents = _extents(file.fileno(), os.fstat(file.fileno()).st_size)
        found = []
        for start, end in extents:
            file.seek(start)
            found.append((start, file.read(end - start)))
        return found
