"""Encryption at rest: the owner pre-encrypts the root before it reaches the host.

The owner writes a root file-system image holding a secret, encrypts it into a LUKS2 volume
(the plaintext never touches the output) and hands the image to the host. The host scans every
byte of it; only the volume key — released later to a genuine boot — opens it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cvm.disk.conversion import encrypt_image
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.errors import WrongKeyError

ROOT_SIZE = 4 << 20
SECRET_OFFSET = 0x12_3400


@dataclass(frozen=True)
class DiskOutcome:
    """What the host found in the image, and what the owner's key and a guess opened."""

    image_bytes: int
    header_summary: str
    host_finds_secret: bool
    key_opens_volume: bool
    wrong_key_refused: bool


def run(secret: bytes, passphrase: bytes, workdir: Path | None = None) -> DiskOutcome:
    """Encrypt a root image holding ``secret``; let the host scan it; open it with the key."""
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        plain, image = Path(scratch) / "root.img", Path(scratch) / "root.luks"
        data = bytearray(ROOT_SIZE)
        data[SECRET_OFFSET : SECRET_OFFSET + len(secret)] = secret
        plain.write_bytes(bytes(data))
        kdf = KdfSpec("pbkdf2", iterations=1000)
        encrypt_image(plain, image, passphrase, kdf, sector_size=4096)
        os.remove(plain)
        raw = image.read_bytes()
        with FileStorage(image, read_only=True) as storage:
            volume = Luks2Volume.open(storage)
            segment = volume.segment
            summary = (
                f"LUKS2 {volume.uuid[:8]}, {segment.encryption}, sector {segment.sector_size}"
            )
            key = volume.unlock(passphrase)
            device = volume.data_device(key)
            opened = device.read(SECRET_OFFSET, len(secret)) == secret
            try:
                volume.unlock(passphrase + b"?")
                refused = False
            except WrongKeyError:
                refused = True
    return DiskOutcome(len(raw), summary, secret in raw, opened, refused)
