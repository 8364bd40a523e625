"""Disk throughput: the dm-crypt layer and pre-encryption against AES-XTS baselines.

Measured in one process (``python benchmarks/disk.py [--json] [--size-mib 256]``):

- ``contiguous``: AES-256-XTS over one contiguous buffer through ``cryptography`` (16 MiB data
  units, OpenSSL's limit) — the speed of light for this machine;
- ``naive``: one ``cryptography`` XTS call per sector (a fresh ``Cipher`` each time);
- ``batched``: :class:`cvm.crypto.xts.XtsCipher` (batched tweaks) over 8 MiB pieces, one and
  two threads;
- ``dm_crypt_write`` / ``dm_crypt_read``: sequential 8 MiB writes and reads through
  :class:`cvm.disk.dm_crypt.CryptDevice` on a temporary file (file I/O included), next to
  ``naive_dm_crypt_write``: the same 8 MiB writes with one XTS call per sector;
- ``pre_encryption``: ``encrypt_image`` of a ``--size-mib`` image into a new LUKS2 image
  (PBKDF2 with 1000 iterations so the KDF does not dominate), next to ``plain_copy``: the same
  file read and written in 8 MiB pieces with no encryption (the file-system ceiling), and
  ``naive_pre_encryption``: the same reads and writes with one XTS call per 4096-byte sector.
  Each is the best of two runs.

Every figure is MB/s (10^6 bytes per second), with ratios against ``contiguous`` and ``naive``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cvm.crypto.xts import XtsCipher, encrypt_contiguous, encrypt_one_sector
from cvm.disk.conversion import encrypt_image
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from timing import argument_parser, best_seconds, print_figures

CHUNK = 8 << 20
UNIT = 1 << 24


def _rate(size: int, action: Callable[[], object], repeat: int = 3) -> float:
    return size / best_seconds(action, repeat) / 1e6


def _contiguous(key: bytes, data: bytes) -> None:
    view = memoryview(data)
    for offset in range(0, len(data), UNIT):
        encrypt_contiguous(key, view[offset : offset + UNIT])


def _naive(key: bytes, data: bytes, sector: int) -> None:
    view = memoryview(data)
    step = sector // 512
    for index in range(len(data) // sector):
        encrypt_one_sector(key, index * step, view[index * sector : (index + 1) * sector])


def _pieces(action: Callable[[memoryview], object], data: bytes) -> None:
    view = memoryview(data)
    for offset in range(0, len(data), CHUNK):
        action(view[offset : offset + CHUNK])


def _plain_copy(source: Path, target: Path) -> None:
    with source.open("rb") as reader, FileStorage(target, create=True) as writer:
        offset = 0
        while chunk := reader.read(CHUNK):
            writer.write(offset, chunk)
            offset += len(chunk)
        writer.flush()


def _naive_pre_encryption(key: bytes, source: Path, target: Path) -> None:
    with source.open("rb") as reader, FileStorage(target, create=True) as writer:
        offset = 0
        while chunk := reader.read(CHUNK):
            view = memoryview(chunk)
            piece = b"".join(
                encrypt_one_sector(key, (offset + at) // 512, view[at : at + 4096])
                for at in range(0, len(chunk), 4096))
            writer.write((16 << 20) + offset, piece)
            offset += len(chunk)
        writer.flush()


def _once(size: int, action: Callable[[], object], cleanup: Path) -> float:
    best = 0.0
    for _ in range(2):
        start = time.perf_counter()
        action()
        best = max(best, size / (time.perf_counter() - start) / 1e6)
        cleanup.unlink()
    return best


def _dm_crypt(workdir: Path, key: bytes, data: bytes, sector: int, threads: int
              ) -> tuple[float, float, float]:
    image = workdir / f"dm-{sector}-{threads}.img"
    image.write_bytes(b"")
    os.truncate(image, (16 << 20) + len(data))
    with FileStorage(image) as storage:
        volume = Luks2Volume.format(storage, b"bench", KdfSpec("pbkdf2", iterations=1000),
                                    volume_key=key, sector_size=sector)
        device = volume.data_device(key, threads=threads)
        view = memoryview(data)

        def write() -> None:
            for offset in range(0, len(data), CHUNK):
                device.write(offset, view[offset : offset + CHUNK])

        def read() -> None:
            for offset in range(0, len(data), CHUNK):
                device.read(offset, CHUNK)

        def naive_write() -> None:
            for offset in range(0, naive_size, CHUNK):
                piece = b"".join(
                    encrypt_one_sector(key, (offset + at) // 512, view[offset + at :][:sector])
                    for at in range(0, CHUNK, sector))
                storage.write((16 << 20) + offset, piece)

        naive_size = min(len(data), 16 << 20)
        write_rate = _rate(len(data), write)
        read_rate = _rate(len(data), read)
        naive_rate = _rate(naive_size, naive_write, 2)
    image.unlink()
    return write_rate, read_rate, naive_rate


def measure(size_mib: int) -> dict[str, object]:
    key = os.urandom(64)
    size = size_mib << 20
    data = os.urandom(size)
    naive_size = min(size, 16 << 20)
    base = _rate(size, lambda: _contiguous(key, data), 5)
    results: dict[str, object] = {"size_mib": size_mib, "contiguous_mb_s": round(base, 1),
                                  "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="cvm-bench-") as scratch:
        workdir = Path(scratch)
        for sector in (512, 4096):
            naive = _rate(naive_size, lambda s=sector: _naive(key, data[:naive_size], s), 2)
            row: dict[str, object] = {"naive_mb_s": round(naive, 1)}
            for threads in (1, 2):
                cipher = XtsCipher(key, threads=threads)
                rate = _rate(size, lambda c=cipher, s=sector: _pieces(
                    lambda piece: c.encrypt_sectors(piece, 0, s), data), 5)
                row[f"batched_{threads}t_mb_s"] = round(rate, 1)
                row[f"batched_{threads}t_vs_naive"] = round(rate / naive, 2)
                row[f"batched_{threads}t_vs_contiguous"] = round(rate / base, 3)
            write, read, naive_io = _dm_crypt(workdir, key, data, sector, threads=2)
            row.update({
                "naive_dm_crypt_write_mb_s": round(naive_io, 1),
                "dm_crypt_write_vs_naive_dm_crypt": round(write / naive_io, 2),
                "dm_crypt_write_mb_s": round(write, 1), "dm_crypt_read_mb_s": round(read, 1),
                "dm_crypt_write_vs_naive": round(write / naive, 2),
                "dm_crypt_read_vs_naive": round(read / naive, 2),
                "dm_crypt_write_vs_contiguous": round(write / base, 3),
                "dm_crypt_read_vs_contiguous": round(read / base, 3),
            })
            results[f"sector_{sector}"] = row
        plain = workdir / "plain.img"
        plain.write_bytes(data)
        copy = workdir / "copy.img"
        copy_rate = _once(size, lambda: _plain_copy(plain, copy), copy)
        naive_rate = _once(size, lambda: _naive_pre_encryption(key, plain, copy), copy)
        out = workdir / "luks.img"
        rate = _once(size, lambda: encrypt_image(
            plain, out, b"bench", KdfSpec("pbkdf2", iterations=1000), sector_size=4096,
            volume_key=key), out)
        results["pre_encryption"] = {
            "mb_s": round(rate, 1), "vs_contiguous": round(rate / base, 3),
            "naive_pre_encryption_mb_s": round(naive_rate, 1),
            "vs_naive_pre_encryption": round(rate / naive_rate, 2),
            "plain_copy_mb_s": round(copy_rate, 1), "vs_plain_copy": round(rate / copy_rate, 3),
        }
    return results


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--size-mib", type=int, default=256, help="image size in MiB")
    args = parser.parse_args()
    results = measure(args.size_mib)
    print_figures(results, as_json=args.json)


if __name__ == "__main__":
    main()
