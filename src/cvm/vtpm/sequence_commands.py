"""HashSequenceStart, HMAC_Start, SequenceUpdate, SequenceComplete and EventSequenceComplete.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59, sections 17.2–17.6: a sequence digests
more data than one command carries (TPM2_Hash and TPM2_PCR_Event take at most
MAX_DIGEST_BUFFER, 1024 bytes). TPM2_HashSequenceStart opens a hash sequence, or with
TPM_ALG_NULL an event sequence that hashes with every PCR bank's algorithm; TPM2_HMAC_Start
opens an HMAC sequence with a loaded, unrestricted keyedHash signing key. TPM2_SequenceComplete
returns a hash or HMAC sequence's digest with a hash-check ticket made as TPM2_Hash makes it
(a hash sequence only, not for the NULL hierarchy, not when the first block could start a
TPM-generated structure); TPM2_EventSequenceComplete extends a PCR (or none: TPM_RH_NULL) with
each bank's digest and returns them. Completing flushes the sequence. A sequence's context is
not saved (TPM2_ContextSave answers TPM_RC_SEQUENCE). The bounds are in
:mod:`cvm.vtpm.sequence`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cvm.crypto.tpm_kdf import hmac
from cvm.formats.tpm2.constants import (
    PCR_COUNT,
    TpmAlg,
    TpmaObject,
    TpmCc,
    TpmRh,
    TpmSt,
    digest,
    hash_name,
    is_hash_alg,
)
from cvm.formats.tpm2.public import KeyedHashParms
from cvm.formats.tpm2.response_code import TpmRc, for_handle, for_parameter
from cvm.formats.tpm2.signature import Ticket
from cvm.formats.tpm2.tpm2b import tpm2b, writer
from cvm.vtpm.dispatch import AuthRole, Call, Result, register
from cvm.vtpm.hash_commands import HIERARCHIES, MAX_DIGEST_BUFFER, hash_check_ticket
from cvm.vtpm.sequence import MAX_AUTH, MAX_SEQUENCES, Sequence, SequenceKind
from cvm.vtpm.tpm_object import fail, strip_auth
from cvm.wire import Reader

if TYPE_CHECKING:
    from cvm.vtpm.engine import Tpm


def _auth(source: Reader) -> bytes:
    """TPM2B_AUTH (parameter 1): at most the largest digest; trailing zeros removed."""
    size = source.u16("auth.size")
    if size > MAX_AUTH:
        raise fail(for_parameter(TpmRc.SIZE, 1), "auth is longer than the largest digest")
    return strip_auth(source.take(size, "auth"))


def _buffer(source: Reader, number: int) -> bytes:
    """TPM2B_MAX_BUFFER: at most MAX_DIGEST_BUFFER bytes."""
    size = source.u16("buffer.size")
    if size > MAX_DIGEST_BUFFER:
        raise fail(for_parameter(TpmRc.SIZE, number), "buffer is larger than MAX_DIGEST_BUFFER")
    return source.take(size, "buffer")


def _open(tpm: Tpm, sequence: Sequence) -> Result:
    if len(tpm.sequences) >= MAX_SEQUENCES:
        raise fail(TpmRc.OBJECT_MEMORY, f"at most {MAX_SEQUENCES} sequences are open at once")
    return Result((tpm.load_sequence(sequence),))


def _sequence(tpm: Tpm, call: Call, number: int) -> Sequence:
    """The sequence at the command's handle ``number`` (TPM_RC_MODE for any other object)."""
    sequence = tpm.sequences.get(call.handles[number - 1])
    if sequence is None:
        raise fail(for_handle(TpmRc.MODE, number), "the handle is not a sequence")
    return sequence


def hash_sequence_start(tpm: Tpm, call: Call) -> Result:
    auth = _auth(call.params)
    hash_alg = call.parameter(2).u16("hashAlg")
    call.done()
    if hash_alg == TpmAlg.NULL:
        return _open(tpm, Sequence(SequenceKind.EVENT, hash_alg, auth))
    if not is_hash_alg(hash_alg):
        raise fail(for_parameter(TpmRc.HASH, 2), "hashAlg is not a hash algorithm or NULL")
    return _open(tpm, Sequence(SequenceKind.HASH, hash_alg, auth))


def hmac_start(tpm: Tpm, call: Call) -> Result:
    auth = _auth(call.params)
    hash_alg = call.parameter(2).u16("hashAlg")
    call.done()
    if hash_alg != TpmAlg.NULL and not is_hash_alg(hash_alg):
        raise fail(for_parameter(TpmRc.HASH, 2), "hashAlg is not a hash algorithm or NULL")
    key = tpm.lookup(call.handles[0], 1)
    parms = key.public.parameters
    if not isinstance(parms, KeyedHashParms):
        raise fail(for_handle(TpmRc.TYPE, 1), "the key is not a keyedHash (HMAC) key")
    if key.has(TpmaObject.RESTRICTED):
        raise fail(for_handle(TpmRc.ATTRIBUTES, 1), "the key is restricted")
    if not key.has(TpmaObject.SIGN_ENCRYPT) or key.sensitive is None:
        raise fail(for_handle(TpmRc.KEY, 1), "the key is not a loaded signing key")
    if parms.scheme.scheme != TpmAlg.NULL:  # the key's own hash, which hashAlg may only name
        hash_alg = parms.scheme.hash_alg if hash_alg in (TpmAlg.NULL,
                                                         parms.scheme.hash_alg) else TpmAlg.NULL
    if hash_alg == TpmAlg.NULL:
        raise fail(for_parameter(TpmRc.VALUE, 2), "hashAlg does not fit the key's scheme")
    return _open(tpm, Sequence(SequenceKind.HMAC, hash_alg, auth, key.sensitive.sensitive))


def sequence_update(tpm: Tpm, call: Call) -> Result:
    block = _buffer(call.params, 1)
    call.done()
    _sequence(tpm, call, 1).update(block)
    return Result()


def sequence_complete(tpm: Tpm, call: Call) -> Result:
    block = _buffer(call.params, 1)
    hierarchy = call.parameter(2).u32("hierarchy")
    call.done()
    sequence = _sequence(tpm, call, 1)
    if sequence.kind == SequenceKind.EVENT:
        raise fail(for_handle(TpmRc.MODE, 1), "an event sequence ends with "
                   "TPM2_EventSequenceComplete")
    if hierarchy not in HIERARCHIES:
        raise fail(for_parameter(TpmRc.VALUE, 2), "hierarchy is not a hierarchy or NULL")
    if sequence.kind == SequenceKind.HMAC:
        out = hmac(hash_name(sequence.hash_alg), sequence.key, sequence.data, block)
        ticket = Ticket.null(TpmSt.HASHCHECK)
    else:
        sequence.note_block(block)
        out = digest(sequence.hash_alg, sequence.data, block)
        ticket = (hash_check_ticket(tpm, hierarchy, out) if sequence.safe
                  else Ticket.null(TpmSt.HASHCHECK))
    del tpm.sequences[call.handles[0]]
    return Result(parameters=tpm2b(out) + ticket.to_bytes())


def event_sequence_complete(tpm: Tpm, call: Call) -> Result:
    block = _buffer(call.params, 1)
    call.done()
    pcr = call.handles[0]
    sequence = _sequence(tpm, call, 2)
    if sequence.kind != SequenceKind.EVENT:
        raise fail(for_handle(TpmRc.MODE, 2), "only an event sequence extends PCRs")
    if pcr != TpmRh.NULL and pcr >= PCR_COUNT:
        raise fail(for_handle(TpmRc.VALUE, 1), "pcrHandle is neither a PCR nor TPM_RH_NULL")
    out = writer().u32(len(tpm.pcrs.values))
    for bank in sorted(tpm.pcrs.values):
        value = digest(bank, sequence.data, block)
        if pcr != TpmRh.NULL:
            tpm.pcrs.extend(pcr, bank, value, call.locality)
        out.u16(bank).put(value)
    del tpm.sequences[call.handles[1]]
    return Result(parameters=out.to_bytes())


# This module's rows of the command table (Part 3: handles, authorization roles,
# response handles), registered explicitly so each handler stays a plain function.
register(TpmCc.HASH_SEQUENCE_START, hash_sequence_start, response_handles=1)
register(TpmCc.HMAC_START, hmac_start, handles=1, auth=(AuthRole.USER,), response_handles=1)
register(TpmCc.SEQUENCE_UPDATE, sequence_update, handles=1, auth=(AuthRole.USER,))
register(TpmCc.SEQUENCE_COMPLETE, sequence_complete, handles=1, auth=(AuthRole.USER,))
register(TpmCc.EVENT_SEQUENCE_COMPLETE, event_sequence_complete, handles=2,
         auth=(AuthRole.USER, AuthRole.USER))
