"""The volatile state's encoding: PCR banks as one digest size and the values back to back,
the first encoding (each PCR a TPM2B) still read, and malformed banks refused by name."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.formats.tpm2.constants import TpmAlg
from cvm.vtpm.pcr import PcrBanks
from cvm.vtpm.volatile import LEGACY_MAGIC, VOLATILE_MAGIC, VolatileState

SHA1, SHA256 = int(TpmAlg.SHA1), int(TpmAlg.SHA256)
TAIL = bytes(4) + bytes(4) + bytes(8) + bytes(4)  # no objects, no sessions, counter 0, none saved


def _state() -> VolatileState:
    pcrs = PcrBanks({SHA1: [bytes([i]) * 20 for i in range(3)],
                     SHA256: [bytes([0x80 + i]) * 32 for i in range(2)]}, update_counter=7)
    return VolatileState(True, b"seed", b"proof", pcrs, {}, {})


def _head(magic: bytes) -> bytes:
    return (magic + b"\x01" + b"\x00\x04seed" + b"\x00\x05proof" + (7).to_bytes(4, "big")
            + (2).to_bytes(4, "big"))


def test_banks_are_a_size_and_the_values_back_to_back() -> None:
    expected = (_head(VOLATILE_MAGIC)
                + SHA1.to_bytes(2, "big") + (3).to_bytes(4, "big") + (20).to_bytes(2, "big")
                + b"".join(bytes([i]) * 20 for i in range(3))
                + SHA256.to_bytes(2, "big") + (2).to_bytes(4, "big") + (32).to_bytes(2, "big")
                + b"".join(bytes([0x80 + i]) * 32 for i in range(2)) + TAIL)
    assert _state().to_bytes() == expected
    restored = VolatileState.from_bytes(expected)
    assert restored.pcrs == _state().pcrs
    assert (restored.started, restored.null_seed, restored.null_proof) == (True, b"seed", b"proof")


def test_the_first_encoding_is_still_read() -> None:
    def bank(alg: int, values: list[bytes]) -> bytes:
        return (alg.to_bytes(2, "big") + len(values).to_bytes(4, "big")
                + b"".join(len(v).to_bytes(2, "big") + v for v in values))
    state = _state()
    legacy = (_head(LEGACY_MAGIC) + bank(SHA1, state.pcrs.values[SHA1])
              + bank(SHA256, state.pcrs.values[SHA256]) + TAIL)
    restored = VolatileState.from_bytes(legacy)
    assert restored.pcrs == state.pcrs
    assert restored.to_bytes() == state.to_bytes()  # written back in the current encoding


def test_an_empty_bank_round_trips() -> None:
    state = VolatileState(False, b"", b"", PcrBanks({SHA256: []}), {}, {})
    assert VolatileState.from_bytes(state.to_bytes()).pcrs.values == {SHA256: []}


@pytest.mark.parametrize(("values", "why"), [
    ([bytes(20), bytes(32)], "mixed sizes"), ([bytes(65)], "a digest above 64 bytes"),
    ([b"", b""], "empty digests"),
])
def test_a_bank_that_cannot_be_one_size_is_refused(values: list[bytes], why: str) -> None:
    state = VolatileState(False, b"", b"", PcrBanks({SHA1: values}), {}, {})
    with pytest.raises(FormatError, match=r"^vTPM volatile state: PCR bank 0x4 is not "
                                          r"values of one size of 1 to 64 bytes$"):
        state.to_bytes()


def test_a_64_byte_bank_is_the_largest() -> None:
    state = VolatileState(False, b"", b"", PcrBanks({SHA1: [bytes(64)]}), {}, {})
    assert VolatileState.from_bytes(state.to_bytes()).pcrs.values == {SHA1: [bytes(64)]}


@pytest.mark.parametrize("size", [65, 0])
def test_a_bank_size_outside_1_to_64_is_refused(size: int) -> None:
    good = _state().to_bytes()
    size_at = len(_head(VOLATILE_MAGIC)) + 2 + 4
    bad = good[:size_at] + size.to_bytes(2, "big") + good[size_at + 2:]
    with pytest.raises(FormatError, match=rf"^vTPM volatile state: 3 PCRs of {size} bytes: a "
                                          r"PCR holds 1 to 64 \(at offset 0x26\)$"):
        VolatileState.from_bytes(bad)


def test_values_cut_short_or_a_bad_magic_are_refused() -> None:
    good = _state().to_bytes()
    size_at = len(_head(VOLATILE_MAGIC)) + 2 + 4
    shorter = good[:size_at - 4] + (1000).to_bytes(4, "big") + good[size_at:]
    with pytest.raises(FormatError, match=r"^vTPM volatile state: PCR values needs 20000 bytes "
                                          r"at offset 0x26, only \d+ left$"):
        VolatileState.from_bytes(shorter)
    with pytest.raises(FormatError, match="bad magic"):
        VolatileState.from_bytes(b"CVMTPMV3" + good[8:])
