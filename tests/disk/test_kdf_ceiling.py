"""The KDF cost ceiling: a header's stated cost is announced before it is spent, and a keyslot
(or digest) above the ceiling is refused without deriving anything."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from cvm.disk import keyslot as keyslot_module
from cvm.disk.kdf_ceiling import (
    ARGON2_MAX_MEMORY_KIB,
    DEFAULT_MAX_KDF_COST,
    KdfCeiling,
    describe_kdf,
    kdf_cost,
)
from cvm.disk.keyslot import MAX_KDF_NUMBER, KdfSpec, derive_kdf
from cvm.disk.volume import Luks2Volume
from cvm.errors import PolicyError, UsageError, WrongKeyError
from cvm.formats.luks2.metadata import Argon2Kdf, Pbkdf2Kdf

SIZE = 17 << 20
SALT = bytes(32)


def _hostile(memory_storage: Any, fast_kdf: KdfSpec) -> Any:
    """Keyslot 0 ("one") rewritten to ask for 2^31 - 1 iterations; keyslot 1 ("two") is cheap."""
    storage = memory_storage(SIZE)
    volume = Luks2Volume.format(storage, b"one", fast_kdf)
    volume.add_keyslot(volume.unlock(b"one"), b"two", fast_kdf)
    meta = volume.metadata
    slot = meta.keyslots[0]
    assert isinstance(slot.kdf, Pbkdf2Kdf)
    hostile = replace(slot, kdf=replace(slot.kdf, iterations=MAX_KDF_NUMBER))
    volume._commit(replace(meta, keyslots={**meta.keyslots, 0: hostile}))
    return storage


def test_cost_units() -> None:
    assert kdf_cost(Pbkdf2Kdf("sha256", 1234, SALT)) == 1234
    assert kdf_cost(Argon2Kdf("argon2id", 3, 4096, 4, SALT)) == 3 * 4096
    assert describe_kdf(Argon2Kdf("argon2i", 3, 4096, 2, SALT)) == (
        "argon2i, 3 passes, 4096 KiB, 2 threads")
    assert describe_kdf(Pbkdf2Kdf("sha512", 7, SALT)) == "pbkdf2-sha512, 7 iterations"


def test_ceiling_bounds_are_inclusive() -> None:
    ceiling = KdfCeiling(max_cost=100, max_memory_kib=50)
    assert ceiling.refusal(Pbkdf2Kdf("sha256", 60, SALT), 40) == ""
    assert "cost of 101, above the ceiling of 100" in ceiling.refusal(
        Pbkdf2Kdf("sha256", 61, SALT), 40)
    assert ceiling.refusal(None, 100) == ""
    assert "cost of 101" in ceiling.refusal(None, 101)
    assert ceiling.refusal(Argon2Kdf("argon2id", 2, 50, 1, SALT), 0) == ""
    assert "51 KiB of Argon2 memory, above the limit of 50 KiB" in ceiling.refusal(
        Argon2Kdf("argon2id", 1, 51, 1, SALT), 0)
    assert "cost of 102" in ceiling.refusal(Argon2Kdf("argon2id", 2, 50, 1, SALT), 2)


def test_ceiling_defaults_and_arguments() -> None:
    assert KdfCeiling() == KdfCeiling(1 << 26, 4 << 20)
    assert DEFAULT_MAX_KDF_COST == 1 << 26 and ARGON2_MAX_MEMORY_KIB == 4194304
    assert KdfCeiling(1, 1).max_cost == 1
    with pytest.raises(UsageError, match="--max-kdf-cost"):
        KdfCeiling(0)
    with pytest.raises(UsageError, match="memory ceiling"):
        KdfCeiling(1, 0)


def test_hostile_keyslot_is_announced_and_refused(memory_storage: Any, fast_kdf: KdfSpec
                                                  ) -> None:
    storage = _hostile(memory_storage, fast_kdf)
    heard: list[str] = []

    def listen(text: str) -> None:
        heard.append(text)
        assert not text.startswith("keyslot 0: deriving"), "the ceiling was not applied"

    volume = Luks2Volume.open(storage, announce=listen)
    with pytest.raises(PolicyError, match=r"keyslot 0 asks for a KDF cost of 2147484647, "
                                          r"above the ceiling of 67108864"):
        volume.unlock(b"one")
    assert heard[0] == ("keyslot 0: not tried: pbkdf2-sha256, 2147483647 iterations is a KDF "
                        "cost of 2147484647, above the ceiling of 67108864 (--max-kdf-cost)")
    assert heard[1] == "keyslot 1: deriving its key (pbkdf2-sha256, 1000 iterations)"
    assert volume.unlock_slot(b"two")[0] == 1


def test_raising_the_ceiling_spends_it(memory_storage: Any, fast_kdf: KdfSpec) -> None:
    storage = memory_storage(SIZE)
    volume = Luks2Volume.format(storage, b"one", KdfSpec("pbkdf2", iterations=3000))
    volume.add_keyslot(volume.unlock(b"one"), b"two", fast_kdf)
    exact = Luks2Volume.open(storage, ceiling=KdfCeiling(4000))
    assert exact.unlock_slot(b"one")[0] == 0
    below = Luks2Volume.open(storage, ceiling=KdfCeiling(3999))
    with pytest.raises(PolicyError, match="keyslot 0 asks for a KDF cost of 4000"):
        below.unlock(b"one")
    with pytest.raises(PolicyError):
        below.unlock(b"wrong")
    with pytest.raises(PolicyError, match=r"^keyslot 0 asks for a KDF cost of 4000, above the "
                       r"ceiling of 1999 \(--max-kdf-cost\); keyslot 1 asks for a KDF cost of "
                       r"2000, above the ceiling of 1999 \(--max-kdf-cost\); no other keyslot "
                       r"opens with this key$"):
        Luks2Volume.open(storage, ceiling=KdfCeiling(1999)).unlock(b"two")
    cheap = Luks2Volume.open(storage, ceiling=KdfCeiling(2000))
    assert cheap.unlock_slot(b"two")[0] == 1
    with pytest.raises(WrongKeyError, match=r"^No key available with this passphrase\.$"):
        Luks2Volume.open(storage).unlock(b"wrong")


def test_digest_above_the_ceiling(memory_storage: Any, fast_kdf: KdfSpec) -> None:
    storage = memory_storage(SIZE)
    volume = Luks2Volume.format(storage, b"one", fast_kdf)
    key = volume.unlock(b"one")
    strict = Luks2Volume.open(storage, ceiling=KdfCeiling(999))
    with pytest.raises(PolicyError, match="digest 0 asks for a KDF cost of 1000"):
        strict.check_volume_key(key)
    Luks2Volume.open(storage, ceiling=KdfCeiling(1000)).check_volume_key(key)
    with pytest.raises(WrongKeyError, match=r"^volume key does not match the volume's digest$"):
        Luks2Volume.open(storage, ceiling=KdfCeiling(1000)).check_volume_key(bytes(64))


def test_format_announces_calibration_and_derivation(memory_storage: Any) -> None:
    heard: list[str] = []
    Luks2Volume.format(memory_storage(SIZE), b"one", KdfSpec("pbkdf2", iter_time_ms=5),
                       announce=heard.append)
    assert heard[0] == "keyslot 0: calibrating pbkdf2 for 5 ms"
    assert heard[1].startswith("keyslot 0: deriving its key (pbkdf2-sha256, ")
    assert len(heard) == 2


@pytest.mark.parametrize(("spec", "message"), [
    ({"memory_kib": 99999999999}, "--pbkdf-memory must be in 32..4194304 KiB"),
    ({"memory_kib": ARGON2_MAX_MEMORY_KIB + 1}, "not 4194305$"),
    ({"memory_kib": 31}, "--pbkdf-memory"),
    ({"iterations": 0}, "--pbkdf-force-iterations must be in 1..2147483647, not 0"),
    ({"iterations": MAX_KDF_NUMBER + 1}, "--pbkdf-force-iterations"),
    ({"iter_time_ms": 0}, "--iter-time must be in 1..2147483647 ms, not 0"),
    ({"iter_time_ms": MAX_KDF_NUMBER + 1}, "--iter-time"),
    ({"parallel": 0}, "--pbkdf-parallel must be in 1..16, not 0"),
    ({"parallel": 17}, "--pbkdf-parallel"),
    ({"type": "scrypt"}, "unknown PBKDF 'scrypt'"),
])
def test_kdf_spec_out_of_range_is_usage(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        KdfSpec(**{"type": "argon2id", **spec})


def test_kdf_spec_limits_are_inclusive() -> None:
    KdfSpec("argon2id", iterations=MAX_KDF_NUMBER, iter_time_ms=MAX_KDF_NUMBER,
            memory_kib=ARGON2_MAX_MEMORY_KIB, parallel=16)
    KdfSpec("argon2i", iterations=1, iter_time_ms=1, memory_kib=32, parallel=1)


def test_calibration_is_clamped(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[object, ...]] = []

    def calibrate(*arguments: object) -> int:
        asked.append(arguments)
        return 1 << 40

    monkeypatch.setattr(keyslot_module.kdfs, "calibrate_pbkdf2", calibrate)
    monkeypatch.setattr(keyslot_module.kdfs, "calibrate_argon2", calibrate)
    pbkdf2 = derive_kdf(KdfSpec("pbkdf2", iter_time_ms=7, hash="sha512"), 64, bytes)
    argon2 = derive_kdf(KdfSpec("argon2i", iter_time_ms=5, memory_kib=64, parallel=2), 32,
                        bytes)
    assert asked == [("sha512", 7, 64), ("argon2i", 5, 64, 2, 32)]
    assert isinstance(pbkdf2, Pbkdf2Kdf) and pbkdf2.iterations == MAX_KDF_NUMBER
    assert isinstance(argon2, Argon2Kdf) and argon2.time == MAX_KDF_NUMBER
    assert (argon2.memory, argon2.cpus, len(argon2.salt)) == (64, 2, 32)
