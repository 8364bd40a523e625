"""What the host receives holds no secret: no 8-byte run of the volume key, the vTPM seeds and
proofs, the state key, the recovery passphrase, the provisioning key or the owner's private
keys appears in disk.img, the firmware, vtpm-state.bin, image.json or the reference values.
(``host-vtpm-state.key`` is the documented exception of modes without an SVSM.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvm.disk.storage import FileStorage
from cvm.image.bundle import BuiltImage, ImageSpec, build_image
from cvm.image.disk_layout import open_root
from cvm.image.keys import OwnerKeys
from cvm.image.provisioning import unwrap_state_key
from cvm.vtpm.state import PersistentState
from cvm.vtpm.state_file import MonotonicCounter, ReleasedKeyProvider, open_state

WINDOW = 8
CHUNK = 1 << 20
HOST_FILES = ("disk.img", "firmware/OVMF.fd", "firmware/OVMF_VARS.fd", "firmware/SVSM.bin",
              "vtpm-state.bin", "image.json", "reference-values.json")


def _windows(secrets: list[bytes]) -> np.ndarray:
    runs = {int.from_bytes(s[i : i + WINDOW], "little")
            for s in secrets for i in range(len(s) - WINDOW + 1)}
    return np.array(sorted(runs), dtype=np.uint64)


def find_leaks(data: bytes, secrets: list[bytes]) -> list[int]:
    """Offsets in ``data`` where an 8-byte run of any secret starts (all-zero MiB skipped)."""
    wanted = _windows(secrets)
    found: list[int] = []
    zero = bytes(CHUNK)
    for start in range(0, len(data), CHUNK):
        chunk = data[start : start + CHUNK]
        if chunk == zero[: len(chunk)] and not any(data[start + CHUNK : start + CHUNK + WINDOW]):
            continue
        piece = data[start : start + CHUNK + WINDOW - 1]
        for shift in range(WINDOW):
            count = (len(piece) - shift) // WINDOW
            view = np.frombuffer(piece, dtype=np.uint64, count=count, offset=shift)
            places = np.searchsorted(wanted, view).clip(0, len(wanted) - 1)
            hits = np.nonzero(wanted[places] == view)[0]
            found.extend(start + int(h) * WINDOW + shift for h in hits)
    return sorted(set(found))


def _secrets(out: Path, built: BuiltImage) -> list[bytes]:
    keys = OwnerKeys.load(out / "owner")
    recovery = (out / "owner/recovery.key").read_bytes()
    state_key = unwrap_state_key(keys.provisioning,
                                 (out / "owner/vtpm-state-key.wrapped").read_bytes())
    state = PersistentState.from_bytes(open_state(
        (out / "vtpm-state.bin").read_bytes(), ReleasedKeyProvider(state_key),
        MonotonicCounter(0)))
    with FileStorage(out / "disk.img", read_only=True) as disk:
        volume_key = open_root(disk, built.plan.layout).unlock(recovery)
    private = []
    for key in [p.key for p in (keys.pk, keys.kek, keys.db, keys.vendor) if p is not None] + (
            [keys.pcr_policy] if keys.pcr_policy is not None else []):
        numbers = key.private_numbers()
        for name in ("d", "p", "q"):
            value = int(getattr(numbers, name))
            private.append(value.to_bytes((value.bit_length() + 7) // 8, "big"))
    return [volume_key, state_key, recovery, keys.provisioning, *state.seeds.values(),
            *state.proofs.values(), *private]


def test_the_scan_finds_a_planted_leak() -> None:
    secret = bytes(range(40, 72))
    assert find_leaks(bytes(1000) + secret[5:13] + bytes(3), [secret]) == [1000]
    assert find_leaks(bytes(1001) + secret[:7] + bytes(30), [secret]) == []


@pytest.fixture(scope="module")
def snp_only(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return build_image(tmp_path_factory.mktemp("snp") / "img",
                       ImageSpec(chain="uki", seal="both", kdf_cost="fast", seed=3))


def test_an_snp_only_image_gives_the_host_no_secret(snp_only: BuiltImage) -> None:
    out = snp_only.out
    assert not (out / "host-vtpm-state.key").exists()
    assert snp_only.manifest["vtpm"]["host_state_key"] is None
    secrets = _secrets(out, snp_only)
    for name in HOST_FILES:
        data = (out / name).read_bytes()
        assert find_leaks(data, secrets) == [], name


def test_the_planted_volume_key_is_found_in_the_disk(snp_only: BuiltImage,
                                                     tmp_path: Path) -> None:
    """Positive control on the real disk: write the volume key in clear somewhere."""
    secrets = _secrets(snp_only.out, snp_only)
    data = bytearray((snp_only.out / "disk.img").read_bytes())
    data[0x200000 + 3 : 0x200000 + 3 + 16] = secrets[0][10:26]
    assert find_leaks(bytes(data), secrets)


def test_other_modes_hand_the_host_the_state_key(built: BuiltImage) -> None:
    key = (built.out / "host-vtpm-state.key").read_bytes()
    assert built.manifest["vtpm"]["host_state_key"] == "host-vtpm-state.key"
    assert len(key) == 32
