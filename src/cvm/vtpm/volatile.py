"""The vTPM's volatile state as bytes: PCRs, loaded objects and sessions.

What a TPM loses at power-off (TCG "TPM 2.0 Library, Part 1", revision 1.59, sections 17
"PCRs", 19 "Sessions" and 30.3 "Transient objects"): the PCR banks and their update counter,
the null hierarchy's seed and proof, transient objects and authorization sessions. The SVSM
keeps these bytes, beside the non-volatile state, in its VMPL0 pages, so that every secret
of the vTPM lives in encrypted guest memory: the engine holds them only while one command
runs (:meth:`cvm.guest.svsm.svsm.Svsm.unload`). cvm's own big-endian encoding, TPM2B-style sizes;
a PCR bank is its digest size once, then its values back to back (the SVSM reads and writes
these bytes at every vTPM command, so a bank costs one slice per PCR). The first encoding
(magic ``CVMTPMVS``, each PCR a TPM2B) is still read: ``cvm tpm serve`` may have sealed one in
its state file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cvm.errors import FormatError
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.sensitive import Sensitive
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, writer
from cvm.vtpm.pcr import PcrBanks
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.session import Session
from cvm.vtpm.tpm_object import TpmObject
from cvm.wire import Reader, Writer

VOLATILE_MAGIC = b"CVMTPMV2"
LEGACY_MAGIC = b"CVMTPMVS"  # each PCR a TPM2B; still read (a served TPM's state file)
ABSENT = 0xFFFFFFFF
MAX_PCR_SIZE = 64  # the largest digest a bank can hold (SHA-512)


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

    def to_bytes(self) -> bytes:
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
        return sink.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> VolatileState:
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
        source.expect_end()
        return cls(started, null_seed, null_proof, pcrs, objects, sessions, saved, counter)


def _write_bank(sink: Writer, bank: int, values: list[bytes]) -> None:
    """One PCR bank: ``u16 bank ‖ u32 count ‖ u16 digest size ‖ the values back to back``."""
    size = len(values[0]) if values else 0
    if not _digest_size_fits(len(values), size) or len(set(map(len, values))) > 1:
        raise FormatError(f"vTPM volatile state: PCR bank {bank:#x} is not values of one "
                          f"size of 1 to {MAX_PCR_SIZE} bytes")
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
