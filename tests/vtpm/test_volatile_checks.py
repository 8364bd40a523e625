"""The volatile state's refusals name what is wrong: every cut of an encoding names the field
it falls in (the field-by-field reader's labels, in encoding order), the magic, the first
encoding's PCRs and a handle that is both an object and a sequence. And the fast reader reads a
whole bank of 24 PCRs in one struct call (it runs at every vTPM command)."""

from __future__ import annotations

import re
import struct

import pytest
from tests.vtpm.test_volatile_encoding import _rich_encoding, _rich_state

from cvm.errors import FormatError
from cvm.formats.tpm2.constants import TpmAlg, TpmRh
from cvm.formats.tpm2.public import KeyedHashParms, Public
from cvm.vtpm import volatile
from cvm.vtpm.pcr import PcrBanks
from cvm.vtpm.sequence import Sequence, SequenceKind
from cvm.vtpm.tpm_object import TpmObject
from cvm.vtpm.volatile import LEGACY_MAGIC, VOLATILE_MAGIC, VolatileState, _unpack

PREFIX = "vTPM volatile state: "
SESSION = ["handle", "type", "hash", "session value", "bound", "bind name", "pcr counter",
           "command code", "flags", "symmetric bits"]
OBJECT = ["handle", "hierarchy", "TPM2B_PUBLIC", "sensitive", "qualified name"]
BANK = ["bank", "PCR count", "PCR size", "PCR values"]


def _refusal(data: bytes) -> str:
    with pytest.raises(FormatError) as refused:
        VolatileState._from_bytes_checked(data)
    message = str(refused.value)
    assert message.startswith(PREFIX), message
    return message.removeprefix(PREFIX)


def test_every_cut_names_the_field_it_falls_in_in_encoding_order() -> None:
    """The rich state: three banks, two objects, two sessions, one saved session."""
    data = _rich_encoding()
    labels: list[str] = []
    for cut in range(len(data)):
        message = _refusal(data[:cut])
        found = re.fullmatch(r"(.+?)(\.size)? needs \d+ bytes at offset 0x[0-9a-f]+, only "
                             r"\d+ left", message)
        assert found is not None, (cut, message)
        if not labels or labels[-1] != found[1]:
            labels.append(found[1])
    assert labels == (["magic", "started", "null seed", "null proof", "pcrUpdateCounter",
                       "banks", *BANK * 3, "objects", *OBJECT * 2, "sessions", *SESSION * 2,
                       "context counter", "saved sessions", "sequence", *SESSION])
    assert VolatileState._from_bytes_checked(data) == _rich_state()


def test_a_cut_names_its_offset_and_what_is_left() -> None:
    data = _rich_encoding()
    assert _refusal(data[:3]) == "magic needs 8 bytes at offset 0x0, only 3 left"
    assert _refusal(data[:10]) == "null seed.size needs 2 bytes at offset 0x9, only 1 left"
    assert _refusal(data[:79]) == "pcrUpdateCounter needs 4 bytes at offset 0x4d, only 2 left"


@pytest.mark.parametrize("magic", [b"CVMTPMV3", b"cvmtpmv2", bytes(8)])
def test_a_bad_magic_is_refused_by_both_readers(magic: bytes) -> None:
    data = magic + _rich_encoding()[8:]
    for read in (VolatileState.from_bytes, VolatileState._from_bytes_checked):
        with pytest.raises(FormatError) as refused:
            read(data)
        assert str(refused.value) == "vTPM volatile state: bad magic"


def _legacy(values: list[bytes]) -> bytes:
    return (LEGACY_MAGIC + b"\x01" + b"\x00\x04seed" + b"\x00\x05proof" + (7).to_bytes(4, "big")
            + (1).to_bytes(4, "big") + int(TpmAlg.SHA1).to_bytes(2, "big")
            + len(values).to_bytes(4, "big")
            + b"".join(len(v).to_bytes(2, "big") + v for v in values)
            + bytes(4) + bytes(4) + bytes(8) + bytes(4))


def test_the_first_encodings_pcrs_are_named_and_hold_at_most_64_bytes() -> None:
    largest = _legacy([bytes([1]) * 64, b"\x02"])
    assert VolatileState.from_bytes(largest).pcrs.values == {4: [bytes([1]) * 64, b"\x02"]}
    assert _refusal(_legacy([bytes(65)])) == "PCR.size 65 exceeds the maximum 64 (at offset 0x26)"
    assert _refusal(largest[:33]) == "PCR count needs 4 bytes at offset 0x20, only 1 left"
    assert _refusal(largest[:37]) == "PCR.size needs 2 bytes at offset 0x24, only 1 left"
    assert _refusal(largest[:40]) == "PCR needs 64 bytes at offset 0x26, only 2 left"


def test_a_handle_that_is_both_an_object_and_a_sequence_is_refused_by_both_readers() -> None:
    public = Public(TpmAlg.KEYEDHASH, TpmAlg.SHA256, 0x40, b"", KeyedHashParms(), b"u" * 32)
    state = VolatileState(True, b"seed", b"proof", PcrBanks(),
                          {0x80000000: TpmObject(public, None, TpmRh.NULL, b"")}, {},
                          sequences={0x80000000: Sequence(SequenceKind.HASH, TpmAlg.SHA256,
                                                          b"")})
    data = state._to_bytes_checked()
    for read in (VolatileState.from_bytes, VolatileState._from_bytes_checked):
        with pytest.raises(FormatError) as refused:
            read(data)
        assert str(refused.value) == ("vTPM volatile state: a handle is both an object and "
                                      "a sequence")


class _Counting:
    """A struct layout that counts its calls."""

    def __init__(self, layout: struct.Struct, calls: list[int]) -> None:
        self._layout = layout
        self._calls = calls

    def unpack_from(self, data: bytes, offset: int) -> tuple[bytes, ...]:
        self._calls.append(offset)
        return self._layout.unpack_from(data, offset)


def test_the_fast_reader_reads_a_bank_of_24_pcrs_in_one_call(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    calls: list[int] = []
    layouts = {key: _Counting(layout, calls) for key, layout in volatile._BANK_VALUES.items()}
    monkeypatch.setattr(volatile, "_BANK_VALUES", layouts)
    data = _rich_encoding()
    state = _unpack(data)
    assert len(calls) == len(state.pcrs.values) == 3  # SHA-1, SHA-256, SHA-384: one call each
    assert state == VolatileState._from_bytes_checked(data)
    assert data.startswith(VOLATILE_MAGIC)
