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


@pytest.mark.parametrize(("section", "message"), [
    (_section(_record(handle=0x81000000)),
     "sequence handle 0x81000000 is not a transient handle (at offset 0x3a)"),
    (_section(_record(kind=0)), "sequence kind 0 is not hash, event or HMAC (at offset 0x3b)"),
    (_section(_record(kind=4)), "sequence kind 4 is not hash, event or HMAC (at offset 0x3b)"),
    (_section(_record(kind=2)),  # an event sequence names no hash
     "hashAlg 0x000b does not fit a sequence of kind 2 (at offset 0x3d)"),
    (_section(_record(kind=1, alg=TpmAlg.NULL)),
     "hashAlg 0x0010 does not fit a sequence of kind 1 (at offset 0x3d)"),
    (_section(_record(kind=3, alg=TpmAlg.AES, key=b"k")),
     "hashAlg 0x0006 does not fit a sequence of kind 3 (at offset 0x3d)"),
    (_section(_record(flags=2)),  # ticket-safe without a first block
     "sequence flags 0x02 are not defined (at offset 0x3e)"),
    (_section(_record(flags=4)), "sequence flags 0x04 are not defined (at offset 0x3e)"),
    (_section(_record(auth=b"a" * 65)),
     "sequence authValue.size 65 exceeds the maximum 64 (at offset 0x40)"),
    (_section(_record(key=b"k")),
     "only an HMAC sequence has a key, and it has one (at offset 0x43)"),
    (_section(_record(kind=3)), "only an HMAC sequence has a key, and it has one (at offset 0x42)"),
    (_section(_record(kind=3, key=b"k" * 129)),
     "sequence HMAC key.size 129 exceeds the maximum 128 (at offset 0x42)"),
    (_section(_record(size=MAX_SEQUENCE_DATA + 1)),
     "sequence data of 8193 bytes: at most 8192 (at offset 0x46)"),
    (_section(_record(size=5, data=b"four")),
     "sequence data needs 5 bytes at offset 0x46, only 4 left"),
    (_section(count=0), "0 sequences: a section holds 1 to 2 (at offset 0x36)"),
    (_section(_record(), _record(0x80000001), _record(0x80000002)),
     "3 sequences: a section holds 1 to 2 (at offset 0x36)"),
    (_section(_record(), _record()), "sequence handle 0x80000000 appears twice (at offset 0x56)"),
    (_section(_record()) + b"\x00", "1 unexpected trailing bytes at offset 0x46"),
    (b"\x00\x00", "sequences needs 4 bytes at offset 0x32, only 2 left"),
])
def test_a_malformed_sequence_section_is_refused_by_name(section: bytes, message: str) -> None:
    data = HEAD + TAIL + section
    for read in (VolatileState.from_bytes, VolatileState._from_bytes_checked):
        with pytest.raises(FormatError) as refused:
            read(data)
        assert str(refused.value) == f"vTPM volatile state: {message}"


@pytest.mark.parametrize(("cut", "field"), [
    (0, "sequence handle needs 4 bytes at offset 0x36"),
    (4, "sequence kind needs 1 bytes at offset 0x3a"),
    (5, "sequence hashAlg needs 2 bytes at offset 0x3b"),
    (7, "sequence flags needs 1 bytes at offset 0x3d"),
    (8, "sequence authValue.size needs 2 bytes at offset 0x3e"),
    (10, "sequence HMAC key.size needs 2 bytes at offset 0x40"),
    (12, "sequence HMAC key needs 1 bytes at offset 0x42"),
    (13, "sequence data size needs 4 bytes at offset 0x43"),
    (17, "sequence data needs 4 bytes at offset 0x47"),
])
def test_a_cut_record_names_the_field(cut: int, field: str) -> None:
    record = _record(kind=3, key=b"k", data=b"data")
    data = HEAD + TAIL + _section(record)[: 4 + cut]
    for read in (VolatileState.from_bytes, VolatileState._from_bytes_checked):
        with pytest.raises(FormatError) as refused:
            read(data)
        assert str(refused.value) == f"vTPM volatile state: {field}, only 0 left"


@pytest.mark.parametrize("sequence", [
    Sequence(SequenceKind.HASH, TpmAlg.SHA256, b"a" * 65),
    Sequence(SequenceKind.HMAC, TpmAlg.SHA256, b"", b"k" * 129),
])
def test_the_writer_refuses_what_the_reader_would(sequence: Sequence) -> None:
    with pytest.raises(FormatError, match="exceeds the maximum"):
        _state({0x80000000: sequence}).to_bytes()


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
