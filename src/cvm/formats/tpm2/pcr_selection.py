"""TPMS_PCR_SELECTION and TPML_PCR_SELECTION: which PCRs of which banks.

TCG "TPM 2.0 Library, Part 2: Structures", revision 1.59, Table 94 (TPMS_PCR_SELECTION:
``u16 hash ‖ u8 sizeofSelect ‖ BYTE pcrSelect[sizeofSelect]``, bit ``p % 8`` of byte ``p / 8``
selects PCR ``p``) and Table 110 (TPML_PCR_SELECTION: ``u32 count`` then the entries, at most
HASH_COUNT). The selection order is the order in which PolicyPCR and Quote concatenate PCR
values: entries in list order, PCR indices ascending within each.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.formats.tpm2.constants import PCR_SELECT_MAX, hash_alg, hash_name, is_hash_alg
from cvm.formats.tpm2.tpm2b import reader, writer
from cvm.wire import Reader, Writer

HASH_COUNT = 16
SELECT_BYTES_MAX = 32


def selected_pcrs(select: bytes) -> tuple[int, ...]:
    """The PCR indices a pcrSelect bitmap selects, ascending (bit ``p % 8`` of byte ``p / 8``)."""
    return tuple(
        8 * index + bit for index, byte in enumerate(select) for bit in range(8) if byte >> bit & 1
    )


@dataclass(frozen=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a bank and the raw pcrSelect bitmap."""

    hash_alg: int
    select: bytes = bytes(PCR_SELECT_MAX)

    def __post_init__(self) -> None:
        if len(self.select) > SELECT_BYTES_MAX:
            raise FormatError(f"TPMS_PCR_SELECTION: sizeofSelect {len(self.select)} too large")

    @classmethod
    def of(cls, bank: str | int, pcrs: Iterable[int], size: int = PCR_SELECT_MAX) -> PcrSelection:
        """The selection of ``pcrs`` in ``bank`` ("sha256" or a TPM_ALG_ID)."""
        alg = hash_alg(bank) if isinstance(bank, str) else bank
        bitmap = bytearray(size)
        for pcr in pcrs:
            if not 0 <= pcr < 8 * size:
                raise FormatError(f"PCR {pcr} does not fit a {size}-byte selection")
            bitmap[pcr // 8] |= 1 << (pcr % 8)
        return cls(alg, bytes(bitmap))

    @property
    def pcrs(self) -> tuple[int, ...]:
        """The selected PCR indices, ascending."""
        return selected_pcrs(self.select)

    @property
    def bank(self) -> str:
        return hash_name(self.hash_alg) if is_hash_alg(self.hash_alg) else f"{self.hash_alg:#06x}"

    @classmethod
    def read(cls, source: Reader) -> PcrSelection:
        alg = source.u16("hash")
        size = source.u8("sizeofSelect")
        if size > SELECT_BYTES_MAX:
            raise source.fail(f"sizeofSelect {size} too large")
        return cls(alg, source.take(size, "pcrSelect"))

    def write(self, sink: Writer) -> Writer:
        return sink.u16(self.hash_alg).u8(len(self.select)).put(self.select)

    def __str__(self) -> str:
        return f"{self.bank}:{','.join(str(p) for p in self.pcrs)}"


@dataclass(frozen=True)
class PcrSelectionList:
    """TPML_PCR_SELECTION: an ordered list of bank selections."""

    selections: tuple[PcrSelection, ...] = ()

    def __post_init__(self) -> None:
        if len(self.selections) > HASH_COUNT:
            raise FormatError(f"TPML_PCR_SELECTION: {len(self.selections)} entries exceed 16")

    @classmethod
    def of(cls, bank: str | int, pcrs: Iterable[int]) -> PcrSelectionList:
        return cls((PcrSelection.of(bank, pcrs),))

    @classmethod
    def parse_text(cls, text: str) -> PcrSelectionList:
        """Parse ``sha256:0,7+sha1:7`` (the tpm2-tools notation)."""
        entries = []
        for part in text.split("+"):
            bank, _, numbers = part.partition(":")
            try:
                pcrs = [int(n, 0) for n in numbers.split(",") if n.strip()]
            except ValueError:
                raise FormatError(f"bad PCR list in {part!r}") from None
            entries.append(PcrSelection.of(bank.strip(), pcrs))
        return cls(tuple(entries))

    @classmethod
    def read(cls, source: Reader) -> PcrSelectionList:
        count = source.u32("count")
        if count > HASH_COUNT:
            raise source.fail(f"TPML_PCR_SELECTION count {count} exceeds 16")
        return cls(tuple(PcrSelection.read(source) for _ in range(count)))

    @classmethod
    def from_bytes(cls, data: bytes) -> PcrSelectionList:
        source = reader(data, "TPML_PCR_SELECTION")
        value = cls.read(source)
        source.expect_end()
        return value

    def write(self, sink: Writer) -> Writer:
        sink.u32(len(self.selections))
        for selection in self.selections:
            selection.write(sink)
        return sink

    def to_bytes(self) -> bytes:
        return self.write(writer()).to_bytes()

    def items(self) -> tuple[tuple[int, int], ...]:
        """``(hash_alg, pcr)`` pairs in the order PCR values are concatenated."""
        return tuple((s.hash_alg, pcr) for s in self.selections for pcr in s.pcrs)

    def __str__(self) -> str:
        return "+".join(str(s) for s in self.selections)


def check_banks(selection: PcrSelectionList) -> None:
    """Refuse selections whose bank is not a supported hash (TPM_RC_HASH on a real TPM)."""
    for entry in selection.selections:
        if not is_hash_alg(entry.hash_alg):
            raise FormatError(f"PCR bank {entry.hash_alg:#06x} is not supported")
        if len(entry.select) > PCR_SELECT_MAX:
            raise FormatError(f"sizeofSelect {len(entry.select)} exceeds {PCR_SELECT_MAX}")
