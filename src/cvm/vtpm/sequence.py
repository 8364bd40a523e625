"""Sequence objects: hash, HMAC and event sequences, and their record in the volatile state.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59, section 17 ("Hash/HMAC/Event
Sequences"): a sequence object lives in a transient-object slot under a transient handle, with
its own authValue (DA-exempt, always usable for USER authorization), and digests the data of
any number of TPM2_SequenceUpdate calls. A hash sequence remembers whether its first block could
be the start of a TPM-generated structure (TPM_GENERATED_VALUE, or fewer than its four octets):
then no hash-check ticket is given for its digest.

The vTPM's volatile state is serialised after every command (:mod:`cvm.vtpm.volatile`) and the
running state of a hash cannot be exported, so a sequence keeps the bytes it has been given and
hashes them when it completes. What it holds is bounded: :data:`MAX_SEQUENCE_DATA` bytes per
sequence (more is TPM_RC_MEMORY), and at most :data:`MAX_SEQUENCES` sequences open at once
(more is TPM_RC_OBJECT_MEMORY; sequences also share the engine's transient-object slots), so the
whole vTPM state still fits the SVSM's state pages.

Record (cvm's own big-endian encoding, one per open sequence, in handle order)::

    u32 handle ‖ u8 kind ‖ u16 hashAlg ‖ u8 flags ‖ TPM2B authValue ‖ TPM2B hmacKey
    ‖ u32 size ‖ data

``flags`` bit 0: the first block has been seen; bit 1: a ticket may be given (only with bit 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cvm.formats.tpm2.constants import TPM_GENERATED_VALUE, TpmAlg, TpmHt, handle_type, is_hash_alg
from cvm.formats.tpm2.response_code import TpmRc
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b
from cvm.vtpm.tpm_object import fail
from cvm.wire import Reader, Writer

MAX_SEQUENCE_DATA = 8192  # bytes a sequence holds (the data of its SequenceUpdate calls)
MAX_SEQUENCES = 2  # sequences open at once
MAX_AUTH = 64  # TPM2B_AUTH: the largest digest
MAX_HMAC_KEY = 128  # a keyedHash key's sensitive data (MAX_SYM_DATA)
_GENERATED = TPM_GENERATED_VALUE.to_bytes(4, "big")
_FIRST_BLOCK, _TICKET_SAFE = 1, 2


class SequenceKind(IntEnum):
    """What a sequence computes."""

    HASH = 1  # TPM2_HashSequenceStart with a hash algorithm
    EVENT = 2  # TPM2_HashSequenceStart with TPM_ALG_NULL: every PCR bank's hash
    HMAC = 3  # TPM2_HMAC_Start with a keyedHash signing key


def ticket_safe(block: bytes) -> bool:
    """Whether a hash may get a ticket given the first block of its data: not when the block
    is shorter than TPM_GENERATED_VALUE or begins with it."""
    return len(block) >= len(_GENERATED) and not block.startswith(_GENERATED)


@dataclass
class Sequence:
    """An open sequence: its kind, algorithm, authValue, key and the data it has been given."""

    kind: SequenceKind
    hash_alg: int
    auth_value: bytes
    key: bytes = b""
    data: bytes = b""
    first_block: bool = False
    safe: bool = False

    def note_block(self, block: bytes) -> None:
        """A hash sequence's first block decides whether its digest may get a ticket."""
        if self.kind == SequenceKind.HASH and not self.first_block:
            self.first_block = True
            self.safe = ticket_safe(block)

    def update(self, block: bytes) -> None:
        """TPM2_SequenceUpdate: keep ``block`` (TPM_RC_MEMORY beyond the bound)."""
        if len(self.data) + len(block) > MAX_SEQUENCE_DATA:
            raise fail(TpmRc.MEMORY, f"a sequence holds at most {MAX_SEQUENCE_DATA} bytes")
        self.note_block(block)
        self.data += block


def write_sequence(sink: Writer, handle: int, sequence: Sequence) -> None:
    """One sequence record."""
    flags = (_FIRST_BLOCK if sequence.first_block else 0) | (_TICKET_SAFE if sequence.safe
                                                             else 0)
    sink.u32(handle).u8(sequence.kind).u16(sequence.hash_alg).u8(flags)
    put_tpm2b(sink, sequence.auth_value, MAX_AUTH)
    put_tpm2b(sink, sequence.key, MAX_HMAC_KEY)
    sink.u32(len(sequence.data)).put(sequence.data)


def read_sequence(source: Reader) -> tuple[int, Sequence]:
    """One sequence record, each field checked (the state pages may be corrupt)."""
    handle = source.u32("sequence handle")
    if handle_type(handle) != TpmHt.TRANSIENT:
        raise source.fail(f"sequence handle {handle:#010x} is not a transient handle")
    kind = source.u8("sequence kind")
    if kind not in tuple(SequenceKind):
        raise source.fail(f"sequence kind {kind} is not hash, event or HMAC")
    hash_alg = source.u16("sequence hashAlg")
    if (hash_alg == TpmAlg.NULL) != (kind == SequenceKind.EVENT) or (
            kind != SequenceKind.EVENT and not is_hash_alg(hash_alg)):
        raise source.fail(f"hashAlg {hash_alg:#06x} does not fit a sequence of kind {kind}")
    flags = source.u8("sequence flags")
    if flags not in (0, _FIRST_BLOCK, _FIRST_BLOCK | _TICKET_SAFE):
        raise source.fail(f"sequence flags {flags:#04x} are not defined")
    auth = read_tpm2b(source, "sequence authValue", MAX_AUTH)
    key = read_tpm2b(source, "sequence HMAC key", MAX_HMAC_KEY)
    if bool(key) != (kind == SequenceKind.HMAC):
        raise source.fail("only an HMAC sequence has a key, and it has one")
    size = source.u32("sequence data size")
    if size > MAX_SEQUENCE_DATA:
        raise source.fail(f"sequence data of {size} bytes: at most {MAX_SEQUENCE_DATA}")
    data = source.take(size, "sequence data")
    return handle, Sequence(SequenceKind(kind), hash_alg, auth, key, data,
                            bool(flags & _FIRST_BLOCK), bool(flags & _TICKET_SAFE))


def write_sequences(sink: Writer, sequences: dict[int, Sequence]) -> None:
    """The volatile state's sequence section: ``u32 count ‖ records`` (only when one is open)."""
    if sequences:
        sink.u32(len(sequences))
        for handle, sequence in sorted(sequences.items()):
            write_sequence(sink, handle, sequence)


def read_sequences(source: Reader) -> dict[int, Sequence]:
    """The sequence section, if the state has one (nothing left to read: no sequence)."""
    sequences: dict[int, Sequence] = {}
    if not source.remaining:
        return sequences
    count = source.u32("sequences")
    if not 0 < count <= MAX_SEQUENCES:
        raise source.fail(f"{count} sequences: a section holds 1 to {MAX_SEQUENCES}")
    for _ in range(count):
        handle, sequence = read_sequence(source)
        if handle in sequences:
            raise source.fail(f"sequence handle {handle:#010x} appears twice")
        sequences[handle] = sequence
    return sequences
