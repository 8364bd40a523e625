"""The software PCR bank (:class:`cvm.guest.boot.pcr_bank.SoftwarePcrBank`), its refusals with
their exact messages: no bank, a bank listed twice, a bank not allocated, a PCR outside 0..23 (on
extend and on read, at 24 exactly), a digest of the wrong size, an extend from a locality PTP
Table 3 does not allow (locality 0 by default); and its snapshot of every PCR."""

from __future__ import annotations

import hashlib

import pytest

from cvm.errors import StatusError, UsageError
from cvm.guest.boot.pcr_bank import TPM_RC_LOCALITY, SoftwarePcrBank


def test_a_bank_needs_an_algorithm_and_each_only_once() -> None:
    with pytest.raises(UsageError, match=r"^a PCR bank needs at least one hash algorithm$"):
        SoftwarePcrBank(())
    with pytest.raises(UsageError, match=r"^bank listed twice in \('sha256', 'sha256'\)$"):
        SoftwarePcrBank(("sha256", "sha256"))


def test_the_startup_locality_is_kept_and_sets_pcr0() -> None:
    bank = SoftwarePcrBank(("sha256",), startup_locality=3)
    assert bank.startup_locality == 3
    assert bank.read(0, "sha256") == bytes(31) + b"\x03"
    assert SoftwarePcrBank().startup_locality == 0


def test_a_bank_not_allocated_is_refused_by_name() -> None:
    bank = SoftwarePcrBank(("sha256",))
    with pytest.raises(UsageError,
                       match=r"^bank 'sha1' is not allocated \(banks: \('sha256',\)\)$"):
        bank.read(0, "sha1")
    with pytest.raises(UsageError, match=r"^bank 'sha1' is not allocated"):
        bank.extend(0, {"sha1": bytes(20)})


@pytest.mark.parametrize("pcr", [-1, 24])
def test_a_pcr_outside_0_to_23_is_refused_on_extend_and_read(pcr: int) -> None:
    bank = SoftwarePcrBank(("sha256",))
    message = rf"^PCR {pcr} is outside 0\.\.23$"
    with pytest.raises(UsageError, match=message):
        bank.extend(pcr, {"sha256": bytes(32)})
    with pytest.raises(UsageError, match=message):
        bank.read(pcr, "sha256")
    assert bank.read(23, "sha256") == bytes(32)


def test_a_digest_of_the_wrong_size_is_refused_before_any_bank_changes() -> None:
    bank = SoftwarePcrBank(("sha1", "sha256"))
    with pytest.raises(UsageError, match=r"^sha256 digest must be 32 bytes$"):
        bank.extend(8, {"sha1": bytes(20), "sha256": bytes(20)})
    assert bank.read(8, "sha1") == bytes(20)


def test_the_default_locality_0_may_not_extend_pcr_20_which_locality_1_may() -> None:
    bank = SoftwarePcrBank(("sha256",))
    with pytest.raises(StatusError, match=r"^PCR 20 cannot be extended from locality 0$") as info:
        bank.extend(20, {"sha256": bytes(32)})
    assert info.value.code == TPM_RC_LOCALITY == 0x907
    other = SoftwarePcrBank(("sha256",), locality=1)
    other.extend(20, {"sha256": bytes(32)})
    assert other.read(20, "sha256") == hashlib.sha256(b"\xff" * 32 + bytes(32)).digest()


def test_snapshot_holds_every_pcr_of_every_bank() -> None:
    bank = SoftwarePcrBank(("sha1", "sha256"))
    digest = hashlib.sha256(b"m").digest()
    bank.extend(7, {"sha256": digest})
    snapshot = bank.snapshot()
    assert sorted(snapshot) == ["sha1", "sha256"]
    assert sorted(snapshot["sha256"]) == list(range(24))
    assert snapshot["sha256"][7] == hashlib.sha256(bytes(32) + digest).digest()
    assert snapshot["sha256"][17] == b"\xff" * 32
    assert snapshot["sha1"][7] == bytes(20)
