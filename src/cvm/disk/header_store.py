"""Reading and writing the two LUKS2 header copies, crash-safely.

LUKS2 On-Disk Format Specification v1.1.4, section 2.2 ("Header redundancy"): two copies,
each with its own checksum; on update, ``seqid`` grows and each copy is rewritten in turn, so
an interruption leaves at least one valid copy with either the old or the new metadata. When
reading, the valid copy with the higher ``seqid`` wins; a corrupt or stale copy is reported and
repaired on the next write. The secondary copy is found at ``hdr_size`` of the primary, or, if
the primary is unreadable, by probing the allowed offsets (16 KiB ... 4 MiB).

Public API: :func:`load_header` -> :class:`LoadedHeader` (the winning copy, warnings,
``needs_repair``) and :func:`store_header` (write primary, flush, secondary, flush).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from cvm.disk.storage import Storage
from cvm.errors import CvmError, FormatError
from cvm.formats.luks2.binary_header import BINARY_HEADER_SIZE, HEADER_SIZES, BinaryHeader
from cvm.formats.luks2.header_copy import HeaderCopy
from cvm.formats.luks2.metadata import Metadata


@dataclass(frozen=True)
class LoadedHeader:
    """The copy to use, what was wrong with the other one, and whether to rewrite both."""

    header: HeaderCopy
    warnings: tuple[str, ...]
    needs_repair: bool


def _read_copy(storage: Storage, offset: int, total: int,
               parse_metadata: Callable[[bytes], Metadata]) -> HeaderCopy:
    if offset + BINARY_HEADER_SIZE > total:
        raise FormatError(f"LUKS2 header at {offset}: the device is truncated")
    binary = BinaryHeader.from_bytes(storage.read(offset, BINARY_HEADER_SIZE))
    if offset + binary.hdr_size > total:
        raise FormatError(f"LUKS2 header at {offset}: the device is truncated")
    copy = HeaderCopy.parse(storage.read(offset, binary.hdr_size), parse_metadata)
    if copy.binary.hdr_offset != offset:
        raise FormatError(f"LUKS2 header at {offset} says it is at {copy.binary.hdr_offset}")
    return copy


def load_header(storage: Storage) -> LoadedHeader:
    """Both copies checked; the newest valid one returned (spec section 2.2); the device must
    hold both copies and the whole keyslots area, as cryptsetup requires."""
    loaded = _newest(storage)
    config = loaded.header.metadata.config
    needed = 2 * loaded.header.binary.hdr_size + config.keyslots_size
    if storage.size() < needed:
        raise FormatError(f"LUKS2 device is truncated: {storage.size()} bytes, the header "
                          f"copies and keyslots area need {needed}")
    return loaded


def _parse_once() -> Callable[[bytes], Metadata]:
    """A JSON-area parser that parses each distinct area once: two copies in step hold the
    same JSON, and parsing is a pure function of its bytes (a refusal is not remembered)."""
    parsed: dict[bytes, Metadata] = {}

    def parse(json_area: bytes) -> Metadata:
        if json_area not in parsed:
            parsed[json_area] = Metadata.parse(json_area)
        return parsed[json_area]

    return parse


def _newest(storage: Storage) -> LoadedHeader:
    total = storage.size()
    parse_metadata = _parse_once()
    primary: HeaderCopy | None = None
    secondary: HeaderCopy | None = None
    problems: list[str] = []
    try:
        primary = _read_copy(storage, 0, total, parse_metadata)
    except CvmError as error:
        problems.append(f"primary header is invalid ({error})")
    offsets = (primary.binary.hdr_size,) if primary else HEADER_SIZES
    secondary_errors: list[str] = []
    for offset in offsets:
        try:
            secondary = _read_copy(storage, offset, total, parse_metadata)
            break
        except CvmError as error:
            secondary_errors.append(str(error))
    if secondary is None:
        problems.append(f"secondary header is invalid ({secondary_errors[0]})")
    if primary is None and secondary is None:
        raise FormatError(f"not a valid LUKS2 volume: {problems[0]}; {problems[1]}")
    if primary is None:
        assert secondary is not None
        return LoadedHeader(secondary, (*problems, "recovered from the secondary header"), True)
    if secondary is None:
        return LoadedHeader(primary, (*problems, "recovered from the primary header"), True)
    if primary.binary.seqid == secondary.binary.seqid:
        if primary.metadata != secondary.metadata:
            return LoadedHeader(primary, ("header copies differ at the same seqid; "
                                          "using the primary",), True)
        return LoadedHeader(primary, (), False)
    newer, older = (primary, secondary) if primary.binary.seqid > secondary.binary.seqid else (
        secondary, primary)
    which = "secondary" if newer.binary.secondary else "primary"
    return LoadedHeader(newer, (f"the {which} header is newer (seqid {newer.binary.seqid} > "
                                f"{older.binary.seqid}); using it",), True)


def store_header(storage: Storage, header: HeaderCopy, salts: tuple[bytes, bytes]) -> HeaderCopy:
    """Write ``header`` with ``seqid + 1``: primary, flush, secondary, flush.

    ``salts`` are the per-copy binary-header salts (primary, secondary). Returns the copy as
    written (the primary's view).
    """
    seqid = header.binary.seqid + 1
    size = header.binary.hdr_size
    primary = replace(header, binary=replace(header.binary, secondary=False, hdr_offset=0,
                                             seqid=seqid, salt=salts[0]))
    secondary = replace(header, binary=replace(header.binary, secondary=True, hdr_offset=size,
                                               seqid=seqid, salt=salts[1]))
    storage.write(0, primary.to_bytes())
    storage.flush()
    storage.write(size, secondary.to_bytes())
    storage.flush()
    return primary.sealed()
