"""Open sequences in the volatile state: their record, both readers, and every refusal."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from tests.vtpm.test_sequences import complete, event_complete, start, update

from cvm.errors import FormatError
from cvm.formats.tpm2.constants import TpmAlg, TpmRh
from cvm.formats.tpm2.public import KeyedHashParms, Public
from cvm.formats.tpm2.tpm2b import tpm2b, writer
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.pcr import PcrBanks
from cvm.vtpm.sequence import (
    MAX_SEQUENCE_DATA,
    Sequence,
    SequenceKind,
    ticket_safe,
)
from cvm.vtpm.tpm_object import TpmObject
from cvm.vtpm.volatile import VOLATILE_MAGIC, VolatileState, _unpack

TAIL = bytes(4) + bytes(4) + bytes(8) + bytes(4)  # no objects, no sessions, counter 0, none saved
HEAD = VOLATILE_MAGIC + b"\x01\x00\x04seed\x00\x05proof" + bytes(4) + bytes(4)  # no banks
HASH = Sequence(SequenceKind.HASH, TpmAlg.SHA256, b"auth", b"", b"data", True, True)


def _state(sequences: dict[int, Sequence]) -> VolatileState:
    return VolatileState(True, b"seed", b"proof", PcrBanks(), {}, {}, sequences=sequences)


def _readers() -> list[Callable[[bytes], VolatileState]]:
    return [VolatileState.from_bytes, VolatileState._from_bytes_checked, _unpack]


def test_the_record_layout() -> None:
    hmac_sequence = Sequence(SequenceKind.HMAC, TpmAlg.SHA384, b"", b"key", b"")
    data = _state({0x80000002: hmac_sequence, 0x80000000: HASH}).to_bytes()
    assert data == (HEAD + TAIL + (2).to_bytes(4, "big")
                    # handle, kind, hashAlg, flags, auth, key, data: in handle order
                    + bytes.fromhex("80000000 01 000b 03") + b"\x00\x04auth" + b"\x00\x00"
                    + (4).to_bytes(4, "big") + b"data"
                    + bytes.fromhex("80000002 03 000c 00") + b"\x00\x00" + b"\x00\x03key"
                    + bytes(4))
    assert _state({}).to_bytes() == HEAD + TAIL  # no sequence: no section, as before


@pytest.mark.parametrize("sequence", [
    HASH,
    Sequence(SequenceKind.HASH, TpmAlg.SHA1, b"", b"", b"", False, False),
    Sequence(SequenceKind.HASH, TpmAlg.SHA512, b"a" * 64, b"", b"x" * MAX_SEQUENCE_DATA, True),
    Sequence(SequenceKind.EVENT, TpmAlg.NULL, b"event", b"", b"\x00" * 1024),
    Sequence(SequenceKind.HMAC, TpmAlg.SHA256, b"", b"k" * 128, b"hmac data", True),
])
def test_every_reader_reads_what_both_writers_write(sequence: Sequence) -> None:
    state = _state({0x80000001: sequence})
    data = state._pack()
    assert data == state._to_bytes_checked() == state.to_bytes()
    for read in _readers():
        assert read(data) == state


def test_an_encoding_without_sequences_is_still_read() -> None:
    for read in _readers():
        assert read(HEAD + TAIL).sequences == {}


def _record(handle: int = 0x80000000, kind: int = 1, alg: int = TpmAlg.SHA256, flags: int = 0,
            auth: bytes = b"", key: bytes = b"", data: bytes = b"",
            size: int | None = None) -> bytes:
    return (writer().u32(handle).u8(kind).u16(alg).u8(flags).to_bytes() + tpm2b(auth)
            + tpm2b(key) + writer().u32(len(data) if size is None else size).to_bytes() + data)


def _section(*records: bytes, count: int | None = None) -> bytes:
    return (len(records) if count is None else count).to_bytes(4, "big") + b"".join(records)


@pytest.mark.parametrize(("section", "why"), [
    (_section(_record(handle=0x81000000)), "not a transient handle"),
    (_section(_record(kind=0)), "not hash, event or HMAC"),
    (_section(_record(kind=4)), "not hash, event or HMAC"),
    (_section(_record(kind=2)), "does not fit"),  # an event sequence names no hash
    (_section(_record(kind=1, alg=TpmAlg.NULL)), "does not fit"),
    (_section(_record(kind=3, alg=TpmAlg.AES, key=b"k")), "does not fit"),
    (_section(_record(flags=2)), "flags"),  # ticket-safe without a first block
    (_section(_record(flags=4)), "flags"),
    (_section(_record(auth=b"a" * 65)), "authValue"),
    (_section(_record(key=b"k")), "only an HMAC sequence has a key"),
    (_section(_record(kind=3)), "only an HMAC sequence has a key"),
    (_section(_record(kind=3, key=b"k" * 129)), "HMAC key"),
    (_section(_record(size=MAX_SEQUENCE_DATA + 1)), "at most"),
    (_section(_record(size=5, data=b"four")), "sequence data"),
    (_section(count=0), "1 to 2"),
    (_section(_record(), _record(0x80000001), _record(0x80000002)), "1 to 2"),
    (_section(_record(), _record()), "appears twice"),
    (_section(_record()) + b"\x00", "trailing"),
    (b"\x00\x00", "sequences"),
])
def test_a_malformed_sequence_section_is_refused_by_name(section: bytes, why: str) -> None:
    data = HEAD + TAIL + section
    messages = set()
    for read in (VolatileState.from_bytes, VolatileState._from_bytes_checked):
        with pytest.raises(FormatError) as refused:
            read(data)
        messages.add(str(refused.value))
    assert len(messages) == 1 and why in messages.pop()


def test_a_handle_cannot_be_both_an_object_and_a_sequence() -> None:
    public = Public(TpmAlg.KEYEDHASH, TpmAlg.SHA256, 0x40, b"", KeyedHashParms(), b"u" * 32)
    state = VolatileState(True, b"seed", b"proof", PcrBanks(),
                          {0x80000000: TpmObject(public, None, TpmRh.NULL, b"")}, {},
                          sequences={0x80000000: HASH})
    for read in (VolatileState.from_bytes, VolatileState._from_bytes_checked):
        with pytest.raises(FormatError, match="both an object and a sequence"):
            read(state.to_bytes())
    state.sequences = {0x80000001: HASH}
    assert VolatileState.from_bytes(state.to_bytes()) == state


def test_a_sequence_carries_on_across_the_bytes(tpm: Tpm) -> None:
    """The engine's state through its encoding between every command, as the SVSM keeps it."""

    def execute(command: bytes) -> bytes:
        response = tpm.execute(command)
        tpm.restore_volatile(VolatileState.from_bytes(tpm.volatile().to_bytes()))
        return response

    client = TpmClient(execute)
    client.startup()
    hashing, event = start(client, auth=b"pw"), start(client, TpmAlg.NULL)
    for block in (b"one " * 256, b"two " * 256):
        update(client, hashing, block, Auth(b"pw"))
        update(client, event, block)
    value, ticket = complete(client, hashing, b"three", auth=Auth(b"pw"))
    assert value == hashlib.sha256(b"one " * 256 + b"two " * 256 + b"three").digest()
    assert ticket.digest  # the first block, seen two commands before, allowed a ticket
    digests = event_complete(client, 16, event)
    assert digests[TpmAlg.SHA1] == hashlib.sha1(b"one " * 256 + b"two " * 256).digest()
    assert not tpm.sequences


@pytest.mark.parametrize(("block", "safe"), [
    (b"", False), (b"\xff\x54\x43", False), (b"\xff\x54\x43\x47", False),
    (b"\xff\x54\x43\x47 more", False), (b"\xff\x54\x43\x48", True), (b"abcd", True),
])
def test_ticket_safe(block: bytes, safe: bool) -> None:
    assert ticket_safe(block) is safe


def test_only_a_hash_sequence_notes_its_first_block() -> None:
    for kind in (SequenceKind.EVENT, SequenceKind.HMAC):
        sequence = Sequence(kind, TpmAlg.SHA256, b"")
        sequence.update(b"a first block")
        assert (sequence.first_block, sequence.safe) == (False, False)
    sequence = Sequence(SequenceKind.HASH, TpmAlg.SHA256, b"")
    sequence.update(b"a first block")
    sequence.update(b"\xff\x54\x43\x47 a second block")
    assert (sequence.first_block, sequence.safe) == (True, True)
