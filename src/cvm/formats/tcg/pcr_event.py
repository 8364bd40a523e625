"""One event-log record, in either wire form.

* TCG_PCClientPCREvent (PFP 1.05 r23, section 10.2.1, Table 19): ``u32 pcrIndex | u32 eventType |
  u8 digest[20] | u32 eventDataSize | event``: the only form of a legacy SHA-1 log and the form
  of the first (Spec ID) record of a crypto-agile log.
* TCG_PCR_EVENT2 (section 10.2.2, Table 20): ``u32 pcrIndex | u32 eventType |
  TPML_DIGEST_VALUES digests (u32 count; {u16 hashAlg; digest}[count]) | u32 eventSize | event``,
  digest sizes from the Spec ID event (Table 22).

Both little-endian. The record keeps the digests in log order so that writing it back gives the
same bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.formats.tcg.algorithm import TPM_ALG_SHA1
from cvm.formats.tcg.spec_id_event import SpecIdEvent
from cvm.wire import Reader, Writer

SHA1_DIGEST_SIZE = 20
# TCG_PCR_EVENT2: pcrIndex, eventType, digests.count; each hashAlg; eventSize.
_EVENT2_HEAD = struct.Struct("<III")
_ALG_ID = struct.Struct("<H")
_EVENT_SIZE = struct.Struct("<I")


@dataclass(frozen=True)
class PcrEvent:
    """A measurement record: PCR, event type, one digest per bank, and the event data."""

    pcr_index: int
    event_type: int
    digests: tuple[tuple[int, bytes], ...]
    event: bytes

    def __post_init__(self) -> None:
        for name, value in (("pcrIndex", self.pcr_index), ("eventType", self.event_type)):
            if not 0 <= value <= 0xFFFFFFFF:
                raise UsageError(f"event record: {name} {value} does not fit in a u32")
        ids = [alg for alg, _ in self.digests]
        if len(set(ids)) != len(ids):
            raise UsageError(f"event record: a bank appears twice among {ids}")

    def digest(self, alg_id: int) -> bytes | None:
        """The record's digest for bank ``alg_id``, or None if it has none for that bank."""
        for alg, value in self.digests:
            if alg == alg_id:
                return value
        return None

    # --- TCG_PCClientPCREvent (SHA-1 format) ---------------------------------------------

    @classmethod
    def read_sha1_format(cls, reader: Reader) -> PcrEvent:
        """Read one TCG_PCClientPCREvent from ``reader``."""
        pcr_index = reader.u32("pcrIndex")
        event_type = reader.u32("eventType")
        digest = reader.take(SHA1_DIGEST_SIZE, "digest")
        size = reader.u32("eventDataSize")
        event = reader.take(size, "event")
        return cls(pcr_index, event_type, ((TPM_ALG_SHA1, digest),), event)

    def to_sha1_format(self) -> bytes:
        """This record as a TCG_PCClientPCREvent; it must carry exactly a SHA-1 digest."""
        if len(self.digests) != 1 or self.digests[0][0] != TPM_ALG_SHA1:
            raise UsageError("a SHA-1 format record carries exactly one SHA-1 digest")
        digest = self.digests[0][1]
        if len(digest) != SHA1_DIGEST_SIZE:
            raise UsageError("a SHA-1 digest is 20 bytes")
        writer = Writer().u32(self.pcr_index).u32(self.event_type).put(digest)
        return writer.u32(len(self.event)).put(self.event).to_bytes()

    # --- TCG_PCR_EVENT2 (crypto-agile format) --------------------------------------------

    @classmethod
    def read_event2(cls, reader: Reader, spec: SpecIdEvent) -> PcrEvent:
        """Read one TCG_PCR_EVENT2 whose digest sizes come from ``spec``."""
        pcr_index = reader.u32("pcrIndex")
        event_type = reader.u32("eventType")
        count = reader.u32("digests.count")
        if count > len(spec.algorithms):
            raise reader.fail(
                f"digest count {count} exceeds the {len(spec.algorithms)} banks of the log"
            )
        digests = []
        for _ in range(count):
            alg_id = reader.u16("digests.hashAlg")
            digests.append((alg_id, reader.take(spec.digest_size(alg_id), "digest")))
        size = reader.u32("eventSize")
        event = reader.take(size, "event")
        try:
            return cls(pcr_index, event_type, tuple(digests), event)
        except UsageError as error:
            raise reader.fail(str(error)) from None

    @classmethod
    def read_event2_records(
        cls, data: bytes, offset: int, spec: SpecIdEvent, what: str = "TCG event log"
    ) -> list[PcrEvent]:
        """Every TCG_PCR_EVENT2 of ``data`` from ``offset`` to its end, as :meth:`read_event2`
        reads them one after the other (the same records, the same errors at the same offsets):
        each record whole fields at once while it is well formed; from the first that is not,
        :meth:`read_event2` through a reader named ``what``, which says what is wrong."""
        records: list[PcrEvent] = []
        sizes = {a.alg_id: a.digest_size for a in spec.algorithms}  # each bank once (Spec ID)
        banks, total = len(spec.algorithms), len(data)
        while offset < total:
            if offset + 12 > total:
                break
            pcr_index, event_type, count = _EVENT2_HEAD.unpack_from(data, offset)
            at = offset + 12
            digests = []
            for _ in range(count if count <= banks else 0):
                if at + 2 > total:
                    break
                alg_id = _ALG_ID.unpack_from(data, at)[0]
                size = sizes.get(alg_id)
                if size is None:
                    break
                digests.append((alg_id, data[at + 2 : at + 2 + size]))
                at += 2 + size  # past the end when the digest is cut short
            if len(digests) != count or at + 4 > total:
                break
            end = at + 4 + _EVENT_SIZE.unpack_from(data, at)[0]
            if end > total or len({alg for alg, _ in digests}) != count:
                break
            records.append(cls(pcr_index, event_type, tuple(digests), data[at + 4 : end]))
            offset = end
        if offset < total:  # a malformed record: read from it on, field by field
            reader = Reader(data, what)
            reader.take(offset, "records")
            while reader.remaining:
                records.append(cls.read_event2(reader, spec))
        return records

    def to_event2(self, spec: SpecIdEvent) -> bytes:
        """This record as a TCG_PCR_EVENT2, digest sizes checked against ``spec``."""
        parts = [_EVENT2_HEAD.pack(self.pcr_index, self.event_type, len(self.digests))]
        for alg_id, digest in self.digests:
            try:
                expected = spec.digest_size(alg_id)
            except FormatError as error:
                raise UsageError(str(error)) from None
            if len(digest) != expected:
                raise UsageError(f"digest for bank {alg_id:#06x} must be {expected} bytes")
            if not 0 <= alg_id <= 0xFFFF:
                raise UsageError(f"value {alg_id} does not fit in 2 bytes")
            parts += (_ALG_ID.pack(alg_id), digest)
        parts += (_EVENT_SIZE.pack(len(self.event)), self.event)
        return b"".join(parts)
