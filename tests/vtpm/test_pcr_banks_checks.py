"""The PCR banks themselves (``cvm.vtpm.pcr.PcrBanks``), PCR by PCR and locality by locality.

PC Client PTP Table 3 as the reference TPM encodes it (``{stateSave, resetLocality,
extendLocality}``): which localities may extend and which may reset each of the 24 PCRs, the
values after Startup(CLEAR) and Startup(STATE), the update counter (every change but those of
PCRs 20-22, modulo 2^32), and each refusal's response code and message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from cvm.errors import StatusError
from cvm.formats.tpm2.constants import PCR_COUNT, TpmAlg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc
from cvm.vtpm.pcr import BANKS, PcrBanks

SHA1, SHA256, SHA384, SHA512 = (int(TpmAlg.SHA1), int(TpmAlg.SHA256), int(TpmAlg.SHA384),
                                int(TpmAlg.SHA512))
SIZES = {SHA1: 20, SHA256: 32, SHA384: 48}
HASHES = {SHA1: hashlib.sha1, SHA256: hashlib.sha256, SHA384: hashlib.sha384}
ALL = frozenset(range(5))
# Written out from the table, not from the module's bitmaps.
EXTEND_LOCALITIES = {**{pcr: ALL for pcr in range(17)}, 17: {2, 3, 4}, 18: {2, 3, 4},
                     19: {2, 3}, 20: {1, 2, 3}, 21: {2}, 22: {2}, 23: ALL}
RESET_LOCALITIES = {**{pcr: set() for pcr in range(16)}, 16: {0, 1, 2, 3}, 17: {4}, 18: {4},
                    19: {4}, 20: {2, 4}, 21: {2, 4}, 22: {2, 4}, 23: {0, 1, 2, 3}}


def _started(locality: int = 0) -> PcrBanks:
    banks = PcrBanks()
    banks.startup_clear(locality)
    return banks


def _refused(call: Callable[[], object], code: int, message: str) -> None:
    with pytest.raises(StatusError) as refused:
        call()
    assert refused.value.code == code
    assert str(refused.value) == message


@pytest.mark.parametrize("locality", range(5))
def test_startup_clear_gives_every_pcr_of_every_bank_its_initial_value(locality: int) -> None:
    banks = PcrBanks(update_counter=41)
    banks.startup_clear(locality)
    assert sorted(banks.values) == sorted(SIZES)
    for bank, size in SIZES.items():
        values = banks.values[bank]
        assert len(values) == PCR_COUNT
        assert values[0] == bytes(size - 1) + bytes([locality])
        for pcr in range(1, PCR_COUNT):
            expected = b"\xff" * size if 17 <= pcr <= 22 else bytes(size)
            assert values[pcr] == expected, (bank, pcr)
    assert banks.update_counter == 0


@pytest.mark.parametrize("pcr", range(PCR_COUNT))
@pytest.mark.parametrize("locality", range(5))
def test_each_pcr_is_extended_from_its_localities_only(pcr: int, locality: int) -> None:
    banks = _started()
    before = [banks.values[bank][pcr] for bank in BANKS]
    measured = bytes(range(1, 33))
    if locality not in EXTEND_LOCALITIES[pcr]:
        _refused(lambda: banks.extend(pcr, SHA256, measured, locality), TpmRc.LOCALITY,
                 f"locality {locality} may not extend PCR {pcr} (TPM_RC_LOCALITY)")
        assert [banks.values[bank][pcr] for bank in BANKS] == before
        assert banks.update_counter == 0
        return
    banks.extend(pcr, SHA256, measured, locality)
    assert banks.values[SHA256][pcr] == hashlib.sha256(before[1] + measured).digest()
    assert banks.values[SHA1][pcr] == before[0] and banks.values[SHA384][pcr] == before[2]
    assert banks.update_counter == (0 if pcr in (20, 21, 22) else 1)


@pytest.mark.parametrize("pcr", range(PCR_COUNT))
@pytest.mark.parametrize("locality", range(5))
def test_each_pcr_is_reset_from_its_localities_only(pcr: int, locality: int) -> None:
    banks = _started()
    extender = min(EXTEND_LOCALITIES[pcr])
    for bank in BANKS:
        banks.extend(pcr, bank, bytes(SIZES[bank]), extender)
    counter = banks.update_counter
    before = [banks.values[bank][pcr] for bank in BANKS]
    if locality not in RESET_LOCALITIES[pcr]:
        _refused(lambda: banks.reset(pcr, locality), TpmRc.LOCALITY,
                 f"locality {locality} may not reset PCR {pcr} (TPM_RC_LOCALITY)")
        assert [banks.values[bank][pcr] for bank in BANKS] == before
        assert banks.update_counter == counter
        return
    banks.reset(pcr, locality)
    assert [banks.values[bank][pcr] for bank in BANKS] == [bytes(SIZES[b]) for b in BANKS]
    assert banks.update_counter == (0 if pcr in (20, 21, 22) else 4)  # three extends, a reset


@pytest.mark.parametrize("locality", [5, 8])
def test_localities_beyond_four_extend_and_reset_nothing(locality: int) -> None:
    banks = _started()
    _refused(lambda: banks.extend(16, SHA256, bytes(32), locality), TpmRc.LOCALITY,
             f"locality {locality} may not extend PCR 16 (TPM_RC_LOCALITY)")
    _refused(lambda: banks.reset(16, locality), TpmRc.LOCALITY,
             f"locality {locality} may not reset PCR 16 (TPM_RC_LOCALITY)")


def test_each_bank_is_extended_with_its_own_hash_and_counts_once_per_bank() -> None:
    banks = _started(3)
    for bank, size in SIZES.items():
        measured = bytes([bank]) * size
        banks.extend(0, bank, measured, 0)
        start = bytes(size - 1) + b"\x03"
        assert banks.values[bank][0] == HASHES[bank](start + measured).digest()
    assert banks.update_counter == 3
    banks.extend(0, SHA256, bytes(32), 0)  # a PCR extended again: from its current value
    assert banks.update_counter == 4


def test_a_digest_for_a_bank_that_is_not_allocated_is_ignored() -> None:
    banks = _started()
    before = {bank: list(values) for bank, values in banks.values.items()}
    banks.extend(7, SHA512, bytes(64), 0)
    banks.extend(7, SHA512, b"short", 0)  # not even its size is looked at
    assert banks.values == before and banks.update_counter == 0
    _refused(lambda: banks.extend(7, SHA512, bytes(64), 5), TpmRc.LOCALITY,
             "locality 5 may not extend PCR 7 (TPM_RC_LOCALITY)")  # the locality is, first


@pytest.mark.parametrize("size", [0, 31, 33, 20, 48])
def test_a_digest_of_the_wrong_size_for_its_bank_is_refused(size: int) -> None:
    banks = _started()
    _refused(lambda: banks.extend(7, SHA256, bytes(size), 0), TpmRc.SIZE,
             "digest for PCR 7 has the wrong size (TPM_RC_SIZE)")
    assert banks.values[SHA256][7] == bytes(32) and banks.update_counter == 0


@pytest.mark.parametrize("pcr", [-1, PCR_COUNT, PCR_COUNT + 1, 255])
def test_a_pcr_that_does_not_exist_is_refused_as_a_value(pcr: int) -> None:
    banks = _started()
    message = f"PCR {pcr} does not exist (TPM_RC_VALUE)"
    _refused(lambda: banks.extend(pcr, SHA256, bytes(32), 4), TpmRc.VALUE, message)
    _refused(lambda: banks.reset(pcr, 4), TpmRc.VALUE, message)
    _refused(lambda: banks.read(SHA256, pcr), TpmRc.VALUE, message)


def test_the_first_and_last_pcr_exist() -> None:
    banks = _started()
    assert banks.read(SHA1, 0) == bytes(20)
    assert banks.read(SHA384, PCR_COUNT - 1) == bytes(48)
    banks.extend(PCR_COUNT - 1, SHA1, bytes(20), 0)
    banks.reset(PCR_COUNT - 1, 0)
    assert banks.update_counter == 2


def test_the_update_counter_wraps_at_two_to_the_32() -> None:
    banks = _started()
    banks.update_counter = 0xFFFFFFFF
    banks.extend(7, SHA256, bytes(32), 0)
    assert banks.update_counter == 0
    banks.update_counter = 0xFFFFFFFF
    banks.reset(16, 0)
    assert banks.update_counter == 0


def test_an_unallocated_bank_cannot_be_read() -> None:
    banks = _started()
    _refused(lambda: banks.read(SHA512, 0), TpmRc.PCR,
             "PCR bank 0x000d is not allocated (TPM_RC_PCR)")
    _refused(lambda: banks.read(0x0B0B, 0), TpmRc.PCR,
             "PCR bank 0x0b0b is not allocated (TPM_RC_PCR)")


def test_saved_is_a_copy_of_pcrs_0_to_15_of_every_bank() -> None:
    banks = _started(2)
    banks.extend(15, SHA1, bytes([1]) * 20, 0)
    banks.extend(16, SHA1, bytes([2]) * 20, 0)
    saved = banks.saved()
    assert sorted(saved) == sorted(SIZES)
    for bank, values in saved.items():
        assert values == banks.values[bank][:16]
    saved[SHA1][15] = b"changed"
    assert banks.values[SHA1][15] != b"changed"  # the banks keep their own list


def test_startup_state_restores_pcrs_0_to_15_and_starts_the_others_fresh() -> None:
    banks = _started(0)
    for pcr in (0, 7, 15, 16, 23):
        banks.extend(pcr, SHA256, bytes([pcr]) * 32, 0)
    banks.extend(17, SHA256, bytes(32), 4)
    saved = banks.saved()
    kept = list(banks.values[SHA256][:16])
    saved[SHA512] = [bytes(64)] * 16  # a bank no longer allocated: ignored
    restored = PcrBanks(update_counter=9)
    restored.restore(saved, 3)
    assert restored.values[SHA256][:16] == kept
    assert restored.values[SHA256][0] == banks.values[SHA256][0]  # not the new locality
    assert restored.values[SHA256][16] == bytes(32) and restored.values[SHA256][23] == bytes(32)
    assert restored.values[SHA256][17] == b"\xff" * 32
    assert sorted(restored.values) == sorted(SIZES) and restored.update_counter == 0
    fresh = PcrBanks()
    fresh.restore({}, 3)  # nothing saved: Startup(CLEAR)'s values from that locality
    assert fresh.values[SHA1][0] == bytes(19) + b"\x03"


def test_selected_values_and_their_digest_follow_the_selection_order() -> None:
    banks = _started()
    banks.extend(3, SHA1, bytes([3]) * 20, 0)
    banks.extend(9, SHA256, bytes([9]) * 32, 0)
    selection = PcrSelectionList.parse_text("sha256:9,17+sha1:3")
    values = banks.selected_values(selection)
    assert values == [banks.values[SHA256][9], b"\xff" * 32, banks.values[SHA1][3]]
    assert banks.current_digest(SHA384, selection) == hashlib.sha384(b"".join(values)).digest()
    assert banks.current_digest(SHA256, PcrSelectionList()) == hashlib.sha256().digest()


def test_allocated_lists_every_pcr_of_the_three_banks() -> None:
    allocated = _started().allocated()
    assert [s.hash_alg for s in allocated.selections] == [SHA1, SHA256, SHA384]
    assert all(s.select == b"\xff\xff\xff" for s in allocated.selections)
    assert allocated.items() == tuple((bank, pcr) for bank in BANKS for pcr in range(24))
