"""The vTPM's volatile state as bytes: PCRs, loaded objects and sessions.

What a TPM loses at power-off (TCG "TPM 2.0 Library, Part 1", revision 1.59, sections 17
"PCRs", 19 "Sessions" and 30.3 "Transient objects"): the PCR banks and their update counter,
the null hierarchy's seed and proof, transient objects and authorization sessions. The SVSM
keeps these bytes, beside the non-volatile state, in its VMPL0 pages, so that every secret
of the vTPM lives in encrypted guest memory: the engine holds them only while one command
runs (:meth:`cvm.guest.svsm.svsm.Svsm.unload`). cvm's own big-endian encoding, TPM2B-style sizes;
a PCR bank is its digest size once, then its values back to back (the SVSM reads and writes
these bytes at every vTPM command, so a bank costs one slice per PCR). Open hash, HMAC and
event sequences follow the saved sessions as a last section
(:func:`cvm.vtpm.sequence.write_sequences`), written only while one is open, so a state without
sequences is encoded as before. The first encoding
(magic ``CVMTPMVS``, each PCR a TPM2B) is still read: ``cvm tpm serve`` may have sealed one in
its state file.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field

from cvm.errors import FormatError
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.sensitive import Sensitive
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, writer
from cvm.vtpm.pcr import PcrBanks
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.sequence import Sequence, read_sequences, write_sequences
from cvm.vtpm.session import Session
from cvm.vtpm.tpm_object import TpmObject
from cvm.wire import Reader, Writer

VOLATILE_MAGIC = b"CVMTPMV2"
LEGACY_MAGIC = b"CVMTPMVS"  # each PCR a TPM2B; still read (a served TPM's state file)
ABSENT = 0xFFFFFFFF
MAX_PCR_SIZE = 64  # the largest digest a bank can hold (SHA-512)
TPM2B_MAX = 0xFFFF
# fixed runs, each read or written in one struct call (the format is the same field by field)
_U8, _U16 = struct.Struct(">B"), struct.Struct(">H")
_U32, _U64 = struct.Struct(">I"), struct.Struct(">Q")
_STARTED_AND_SIZE = struct.Struct(">BH")  # started, nullSeed.size
_COUNTER_AND_BANKS = struct.Struct(">II")  # pcrUpdateCounter, banks
_BANK = struct.Struct(">HIH")  # bank, PCR count, PCR size
_TWO_U32 = struct.Struct(">II")  # handle, hierarchy
_SESSION_HEAD = struct.Struct(">IBH")  # handle, type, authHash
_SESSION_TAIL = struct.Struct(">IIBH")  # pcr counter, command code, flags, symmetric bits
_COUNTER_AND_COUNT = struct.Struct(">QI")  # context counter, saved sessions
# a whole bank of 24 SHA-1, SHA-256, SHA-384 or SHA-512 values in one call
PUBLIC_MEMO_SIZE = 64  # public areas kept parsed (by their exact bytes)
_PUBLICS: dict[bytes, Public] = {}
_PUBLICS_LOCK = threading.Lock()
_BANK_VALUES = {(24, size): struct.Struct(f"{size}s" * 24) for size in (20, 32, 48, 64)}


class _IrregularError(Exception):
    """The fast reader met something it does not take: the field-by-field reader decides."""


@dataclass
class VolatileState:
    """Everything a TPM reset clears."""

    started: bool
    null_seed: bytes
    null_proof: bytes
    pcrs: PcrBanks
    objects: dict[int, TpmObject]
    sessions: dict[int, Session]
    saved_sessions: dict[int, tuple[Session, int]] = field(default_factory=dict)
    context_counter: int = 0
    sequences: dict[int, Sequence] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        try:
            return self._pack()
        except struct.error:  # a value that does not fit: the checking writer's error
            return self._to_bytes_checked()

    def _pack(self) -> bytes:
        """The encoding in struct runs (the SVSM writes it at every vTPM command)."""
        parts = [VOLATILE_MAGIC, _STARTED_AND_SIZE.pack(self.started, len(self.null_seed)),
                 self.null_seed, _U16.pack(len(self.null_proof)), self.null_proof,
                 _COUNTER_AND_BANKS.pack(self.pcrs.update_counter, len(self.pcrs.values))]
        for bank, values in sorted(self.pcrs.values.items()):
            _check_bank(bank, values)
            parts += (_BANK.pack(bank, len(values), len(values[0]) if values else 0),
                      *values)
        parts.append(_U32.pack(len(self.objects)))
        for handle, item in sorted(self.objects.items()):
            public = item.public.to_bytes()
            parts += (_TWO_U32.pack(handle, item.hierarchy), _U16.pack(len(public)), public)
            sensitive = item.sensitive.to_bytes() if item.sensitive else b""
            parts += (_U16.pack(len(sensitive)), sensitive,
                      _U16.pack(len(item.qualified_name)), item.qualified_name)
        parts.append(_U32.pack(len(self.sessions)))
        for _, session in sorted(self.sessions.items()):
            _pack_session(parts, session)
        parts.append(_COUNTER_AND_COUNT.pack(self.context_counter, len(self.saved_sessions)))
        for session, sequence in (v for _, v in sorted(self.saved_sessions.items())):
            parts.append(_U64.pack(sequence))
            _pack_session(parts, session)
        if self.sequences:
            section = writer()
            write_sequences(section, self.sequences)
            parts.append(section.to_bytes())
        return b"".join(parts)

    def _to_bytes_checked(self) -> bytes:
        sink = writer().put(VOLATILE_MAGIC).u8(int(self.started))
        put_tpm2b(sink, self.null_seed)
        put_tpm2b(sink, self.null_proof)
        sink.u32(self.pcrs.update_counter).u32(len(self.pcrs.values))
        for bank, values in sorted(self.pcrs.values.items()):
            _write_bank(sink, bank, values)
        sink.u32(len(self.objects))
        for handle, item in sorted(self.objects.items()):
            sink.u32(handle).u32(item.hierarchy).put(item.public.to_tpm2b())
            put_tpm2b(sink, item.sensitive.to_bytes() if item.sensitive else b"")
            put_tpm2b(sink, item.qualified_name)
        sink.u32(len(self.sessions))
        for session in (s for _, s in sorted(self.sessions.items())):
            _write_session(sink, session)
        sink.u64(self.context_counter).u32(len(self.saved_sessions))
        for session, sequence in (v for _, v in sorted(self.saved_sessions.items())):
            sink.u64(sequence)
            _write_session(sink, session)
        write_sequences(sink, self.sequences)
        return sink.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> VolatileState:
        try:
            return _unpack(data)
        except (_IrregularError, struct.error):  # the field-by-field reader names what is wrong
            return cls._from_bytes_checked(data)

    @classmethod
    def _from_bytes_checked(cls, data: bytes) -> VolatileState:
        source = reader(data, "vTPM volatile state")
        magic = source.take(len(VOLATILE_MAGIC), "magic")
        if magic not in (VOLATILE_MAGIC, LEGACY_MAGIC):
            raise FormatError("vTPM volatile state: bad magic")
        started = source.u8("started") == 1
        null_seed, null_proof = read_tpm2b(source, "null seed"), read_tpm2b(source, "null proof")
        pcrs = PcrBanks(update_counter=source.u32("pcrUpdateCounter"))
        for _ in range(source.u32("banks")):
            bank = source.u16("bank")
            pcrs.values[bank] = (_read_bank(source) if magic == VOLATILE_MAGIC else
                                 [read_tpm2b(source, "PCR", MAX_PCR_SIZE)
                                  for _ in range(source.u32("PCR count"))])
        objects = {}
        for _ in range(source.u32("objects")):
            handle, hierarchy = source.u32("handle"), source.u32("hierarchy")
            public = Public.read_tpm2b(source)
            sensitive_bytes = read_tpm2b(source, "sensitive")
            sensitive = Sensitive.from_bytes(sensitive_bytes) if sensitive_bytes else None
            objects[handle] = TpmObject(public, sensitive, hierarchy,
                                        read_tpm2b(source, "qualified name", 66))
        sessions = {}
        for _ in range(source.u32("sessions")):
            session = _read_session(source)
            sessions[session.handle] = session
        counter = source.u64("context counter")
        saved = {}
        for _ in range(source.u32("saved sessions")):
            sequence = source.u64("sequence")
            session = _read_session(source)
            saved[session.handle] = (session, sequence)
        sequences = read_sequences(source)
        source.expect_end()
        _check_slots(objects, sequences)
        return cls(started, null_seed, null_proof, pcrs, objects, sessions, saved, counter,
                   sequences)


def _check_slots(objects: dict[int, TpmObject], sequences: dict[int, Sequence]) -> None:
    if not objects.keys().isdisjoint(sequences):
        raise FormatError("vTPM volatile state: a handle is both an object and a sequence")


def _check_bank(bank: int, values: list[bytes]) -> None:
    # _digest_size_fits(len(values), size), with the size of an empty bank 0
    if (values and not 0 < len(values[0]) <= MAX_PCR_SIZE) or len(set(map(len, values))) > 1:
        raise FormatError(f"vTPM volatile state: PCR bank {bank:#x} is not values of one "
                          f"size of 1 to {MAX_PCR_SIZE} bytes")


def _write_bank(sink: Writer, bank: int, values: list[bytes]) -> None:
    """One PCR bank: ``u16 bank ‖ u32 count ‖ u16 digest size ‖ the values back to back``."""
    _check_bank(bank, values)
    size = len(values[0]) if values else 0
    sink.u16(bank).u32(len(values)).u16(size).put(b"".join(values))


def _digest_size_fits(count: int, size: int) -> bool:
    """``count`` PCRs of ``size`` bytes: a size of 1 to 64 bytes, or an empty bank."""
    return 0 < size <= MAX_PCR_SIZE or (count == 0 and size == 0)


def _read_bank(source: Reader) -> list[bytes]:
    count, size = source.u32("PCR count"), source.u16("PCR size")
    if not _digest_size_fits(count, size):
        raise source.fail(f"{count} PCRs of {size} bytes: a PCR holds 1 to {MAX_PCR_SIZE}")
    if not count:
        return []
    values = source.take(count * size, "PCR values")
    return [values[start : start + size] for start in range(0, count * size, size)]


def _write_session(sink: Writer, session: Session) -> None:
    sink.u32(session.handle).u8(session.session_type).u16(session.auth_hash)
    for value in (session.nonce_tpm, session.nonce_caller, session.session_key,
                  session.policy.value):
        put_tpm2b(sink, value)
    sink.u8(session.bind_name is not None)
    put_tpm2b(sink, session.bind_name or b"")
    sink.u32(ABSENT if session.pcr_counter is None else session.pcr_counter)
    sink.u32(ABSENT if session.command_code is None else session.command_code)
    sink.u8(session.auth_value_needed | session.password_needed << 1)
    sink.u16(session.symmetric_bits)


def _read_session(source: Reader) -> Session:
    handle, kind, auth_hash = source.u32("handle"), source.u8("type"), source.u16("hash")
    nonce_tpm, nonce_caller, key, policy = (read_tpm2b(source, "session value", 64)
                                            for _ in range(4))
    bound = source.u8("bound") == 1
    bind_name = read_tpm2b(source, "bind name", 66)
    counter, code = source.u32("pcr counter"), source.u32("command code")
    flags = source.u8("flags")
    return Session(
        handle, kind, auth_hash, nonce_tpm, nonce_caller, key, bind_name if bound else None,
        PolicyDigest(auth_hash, policy), None if counter == ABSENT else counter,
        bool(flags & 1), bool(flags & 2), None if code == ABSENT else code,
        source.u16("symmetric bits"),
    )


def _pack_session(parts: list[bytes], session: Session) -> None:
    """:func:`_write_session` in struct runs."""
    bind_name = session.bind_name or b""
    parts += (_SESSION_HEAD.pack(session.handle, session.session_type, session.auth_hash),
              _U16.pack(len(session.nonce_tpm)), session.nonce_tpm,
              _U16.pack(len(session.nonce_caller)), session.nonce_caller,
              _U16.pack(len(session.session_key)), session.session_key,
              _U16.pack(len(session.policy.value)), session.policy.value,
              _STARTED_AND_SIZE.pack(session.bind_name is not None, len(bind_name)), bind_name,
              _SESSION_TAIL.pack(ABSENT if session.pcr_counter is None else session.pcr_counter,
                                 ABSENT if session.command_code is None
                                 else session.command_code,
                                 session.auth_value_needed | session.password_needed << 1,
                                 session.symmetric_bits))


# ---- the fast reader: the current encoding in struct runs; anything irregular (a short
# buffer, a size over its maximum, the legacy magic) raises _IrregularError or struct.error,
# and the field-by-field reader above decides, with its messages ------------------------------
def _sized(data: bytes, offset: int, max_size: int) -> tuple[bytes, int]:
    size = _U16.unpack_from(data, offset)[0]
    end = offset + 2 + size
    if size > max_size or end > len(data):
        raise _IrregularError
    return data[offset + 2 : end], end


def _public(body: bytes) -> Public:
    """The public area ``body`` encodes. Not secret and immutable, so each is parsed once and
    kept, at most :data:`PUBLIC_MEMO_SIZE` of them, the oldest forgotten first (a loaded
    object's public area is read at every vTPM command). A refused one is never kept."""
    public = _PUBLICS.get(body)
    if public is None:
        public = Public.from_bytes(body)
        with _PUBLICS_LOCK:  # a served TPM's threads may share the memo
            if len(_PUBLICS) >= PUBLIC_MEMO_SIZE:
                del _PUBLICS[next(iter(_PUBLICS))]
            _PUBLICS[body] = public
    return public


def _unpack(data: bytes) -> VolatileState:
    data = bytes(data)
    if data[:8] != VOLATILE_MAGIC:
        raise _IrregularError
    started, seed_size = _STARTED_AND_SIZE.unpack_from(data, 8)
    offset = 11 + seed_size
    if offset > len(data):
        raise _IrregularError
    null_seed = data[11:offset]
    null_proof, offset = _sized(data, offset, TPM2B_MAX)
    counter, banks = _COUNTER_AND_BANKS.unpack_from(data, offset)
    offset += 8
    pcrs = PcrBanks(update_counter=counter)
    for _ in range(banks):
        bank, count, size = _BANK.unpack_from(data, offset)
        offset += 8
        end = offset + count * size
        if not _digest_size_fits(count, size) or end > len(data):
            raise _IrregularError
        layout = _BANK_VALUES.get((count, size))
        pcrs.values[bank] = (list(layout.unpack_from(data, offset)) if layout is not None
                             else [data[start : start + size] for start in range(offset, end, size)]
                             if count else [])
        offset = end
    objects = {}
    count = _U32.unpack_from(data, offset)[0]
    offset += 4
    for _ in range(count):
        handle, hierarchy = _TWO_U32.unpack_from(data, offset)
        body, offset = _sized(data, offset + 8, TPM2B_MAX)
        if not body:
            raise _IrregularError
        public = _public(body)
        sensitive_bytes, offset = _sized(data, offset, TPM2B_MAX)
        sensitive = Sensitive.from_bytes(sensitive_bytes) if sensitive_bytes else None
        qualified_name, offset = _sized(data, offset, 66)
        objects[handle] = TpmObject(public, sensitive, hierarchy, qualified_name)
    sessions = {}
    count = _U32.unpack_from(data, offset)[0]
    offset += 4
    for _ in range(count):
        session, offset = _unpack_session(data, offset)
        sessions[session.handle] = session
    context_counter, count = _COUNTER_AND_COUNT.unpack_from(data, offset)
    offset += 12
    saved = {}
    for _ in range(count):
        sequence = _U64.unpack_from(data, offset)[0]
        session, offset = _unpack_session(data, offset + 8)
        saved[session.handle] = (session, sequence)
    sequences: dict[int, Sequence] = {}
    if offset != len(data):  # the sequence section (the runs above end within the data)
        source = reader(data[offset:], "vTPM volatile state sequences")
        try:
            sequences = read_sequences(source)
            source.expect_end()
            _check_slots(objects, sequences)
        except FormatError:  # the field-by-field reader refuses it, with its message
            raise _IrregularError from None
    return VolatileState(started == 1, null_seed, null_proof, pcrs, objects, sessions, saved,
                         context_counter, sequences)


def _unpack_session(data: bytes, offset: int) -> tuple[Session, int]:
    handle, kind, auth_hash = _SESSION_HEAD.unpack_from(data, offset)
    nonce_tpm, offset = _sized(data, offset + 7, 64)
    nonce_caller, offset = _sized(data, offset, 64)
    key, offset = _sized(data, offset, 64)
    policy, offset = _sized(data, offset, 64)
    bound = _U8.unpack_from(data, offset)[0] == 1
    bind_name, offset = _sized(data, offset + 1, 66)
    counter, code, flags, bits = _SESSION_TAIL.unpack_from(data, offset)
    return Session(
        handle, kind, auth_hash, nonce_tpm, nonce_caller, key, bind_name if bound else None,
        PolicyDigest(auth_hash, policy), None if counter == ABSENT else counter,
        bool(flags & 1), bool(flags & 2), None if code == ABSENT else code, bits,
    ), offset + _SESSION_TAIL.size
