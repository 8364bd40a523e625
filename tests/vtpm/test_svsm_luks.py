"""The whole story: a disk key sealed by the guest's vTPM (at VMPL0) survives a reboot through
the sealed state file and opens the volume only when the boot measures the same."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.errors import StatusError
from cvm.formats.tpm2.constants import TpmAlg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.guest.svsm.svsm import Svsm
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.luks_token import enroll, tpm2_tokens, unlock
from cvm.guest.tpm.seal import SealPolicy
from cvm.guest.tpm.svsm_guest import SvsmGuest
from cvm.vtpm.state_file import MonotonicCounter

BUFFER, SCRATCH = 0x20000, 0x21000
SELECTION = PcrSelectionList.of("sha256", [7])


def _boot(snp: Any, counter: MonotonicCounter, stored: bytes | None,
          measurement: bytes) -> tuple[Svsm, TpmClient]:
    launched = snp.launch()
    svsm = Svsm.start(launched.guest.vcpus[0], launched.secrets_gpa, counter, snp.random,
                      stored)
    svsm.grant(BUFFER, 2)
    client = TpmClient(SvsmGuest(launched.guest.vcpus[0], svsm, BUFFER, SCRATCH).tpm_execute)
    client.startup()
    client.pcr_extend(7, {TpmAlg.SHA256: hashlib.sha256(measurement).digest()})
    return svsm, client


def test_sealed_disk_key_across_reboots(snp: Any, tmp_path: Path) -> None:
    image = tmp_path / "root.img"
    with image.open("wb") as handle:
        handle.truncate(17 << 20)
    counter = MonotonicCounter()
    svsm, client = _boot(snp, counter, None, b"signed shim + grub")
    with FileStorage(image) as storage:
        volume = Luks2Volume.format(storage, b"recovery", KdfSpec("pbkdf2", iterations=1000))
        volume_key = volume.unlock(b"recovery")
        values = client.pcr_read(SELECTION)[2]
        enroll(volume, volume_key, client, SealPolicy(SELECTION), values, os.urandom(32))
    stored = svsm.seal_state()

    _, client = _boot(snp, counter, stored, b"signed shim + grub")
    with FileStorage(image, read_only=True) as storage:
        volume = Luks2Volume.open(storage)
        assert unlock(volume, tpm2_tokens(volume)[0], client) == volume_key

    _, client = _boot(snp, counter, stored, b"an unsigned bootloader")
    with FileStorage(image, read_only=True) as storage, pytest.raises(StatusError) as refused:
        volume = Luks2Volume.open(storage)
        unlock(volume, tpm2_tokens(volume)[0], client)
    assert refused.value.code == 0x99D
