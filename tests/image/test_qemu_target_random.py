"""The ``--target qemu`` build's random and its spec's checks, without building an image (the
builds are in test_qemu_target.py and test_qemu_seeded.py)."""

from __future__ import annotations

import pytest

from cvm.crypto.drbg import OsRandom, SeededRandom
from cvm.errors import UsageError
from cvm.image.build_epoch import FAT_FIRST_EPOCH, FAT_LAST_EPOCH
from cvm.image.qemu_target import SEED_LABEL, QemuTargetSpec, build_random
from cvm.image.vm_profile import PROFILES


def test_a_seed_gives_its_own_stream_under_the_qemu_label() -> None:
    stream = build_random(7)
    expected = SeededRandom(b"7", b"cvm qemu image")
    assert SEED_LABEL == b"cvm qemu image"
    assert [stream(32), stream(4)] == [expected(32), expected(4)]
    assert build_random(8)(32) != SeededRandom(b"7", SEED_LABEL)(32)
    assert build_random(0)(32) == SeededRandom(b"0", SEED_LABEL)(32)  # 0 is a seed, not none
    assert SeededRandom(b"7", b"cvm image")(32) != build_random(7)(32)  # not the emulated's


def test_no_seed_is_the_operating_systems_random() -> None:
    stream = build_random(None)
    assert isinstance(stream, OsRandom)
    assert len({stream(32) for _ in range(3)}) == 3


@pytest.mark.parametrize("epoch", [FAT_FIRST_EPOCH - 1, FAT_LAST_EPOCH + 1])
def test_a_build_time_fat_cannot_hold_is_refused(epoch: int) -> None:
    spec = QemuTargetSpec("uki", PROFILES["q35"], seed=1, source_date_epoch=epoch)
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        spec.check()


@pytest.mark.parametrize("epoch", [None, FAT_FIRST_EPOCH, FAT_LAST_EPOCH])
def test_a_build_time_fat_holds_is_taken(epoch: int | None) -> None:
    QemuTargetSpec("shim-grub", PROFILES["q35"], source_date_epoch=epoch).check()


@pytest.mark.parametrize(("chain", "workload", "says"), [
    ("grub", b"data", "--chain 'grub': the qemu target builds shim-grub or uki"),
    ("uki", b"", "the workload must be 1 byte to 1 MiB"),
    ("uki", bytes((1 << 20) + 1), "the workload must be 1 byte to 1 MiB")])
def test_a_spec_that_cannot_be_built_is_refused(chain: str, workload: bytes, says: str) -> None:
    with pytest.raises(UsageError) as refused:
        QemuTargetSpec(chain, PROFILES["q35"], workload=workload).check()
    assert str(refused.value) == says
    QemuTargetSpec("uki", PROFILES["q35"], workload=bytes(1 << 20)).check()
