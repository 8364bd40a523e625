"""The consistency rules of a LUKS2 JSON area, as cryptsetup 2.6 applies them on every read.

LUKS2 On-Disk Format Specification v1.1.4, section 3 (keyslots, segments, digests, tokens,
config) says what each object holds; how the objects must fit together is decided by
cryptsetup's header validation (``LUKS2_hdr_validate`` in ``lib/luks2/luks2_json_metadata.c``,
run before any header is used or written). cvm applies the same rules, each with its own
message, so that a header cryptsetup 2.6 refuses is refused here too:

- **tokens** name existing keyslots and carry a non-empty ``type``;
- **digests** name existing keyslots and segments;
- **segments**: at least one; regular segments are numbered 0, 1, ... without a gap and come
  before any backup segment (a ``backup-*`` flag); only the last regular segment may be
  ``dynamic``; no two regular segments overlap; offset + size stays below 2^64; every ``crypt``
  segment is bound to a digest;
- **keyslots**: every keyslot is bound to exactly one digest;
- **config**: ``json_size`` + 4096 is an allowed header size (16 KiB ... 4 MiB);
  ``keyslots_size`` is 4 KiB-aligned and at most 128 MiB; the first data segment starts after
  both header copies and the keyslots area (a segment at offset 0 means a detached header);
- **areas**: each keyslot area is non-empty, starts after both header copies, ends inside the
  keyslots area and overlaps no other keyslot's area.

Public API: :func:`check_consistency`. It raises :class:`~cvm.errors.FormatError` naming the
rule and the objects that break it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cvm.errors import FormatError

if TYPE_CHECKING:
    from cvm.formats.luks2.metadata import Config, Digest, Keyslot, Segment

BINARY_HEADER_SIZE = 4096
METADATA_SIZES = tuple(0x4000 << shift for shift in range(9))
KEYSLOTS_ALIGNMENT = 4096
MAX_KEYSLOTS_SIZE = 128 << 20
UINT64_LIMIT = 1 << 64
BACKUP_FLAG_PREFIX = "backup-"


def _fail(message: str) -> FormatError:
    return FormatError(f"LUKS2 metadata: {message}")


def check_tokens(tokens: Mapping[int, Mapping[str, Any]],
                 keyslots: Mapping[int, Keyslot]) -> None:
    """``hdr_validate_tokens``: a non-empty type; every keyslot reference exists."""
    for number, token in tokens.items():
        if token["type"] == "":
            raise _fail(f"tokens.{number} has an empty type")
        for slot in token["keyslots"]:
            if int(slot) not in keyslots:
                raise _fail(f"tokens.{number} names no keyslot {slot}")


def check_digests(digests: Mapping[int, Digest], keyslots: Mapping[int, Keyslot],
                  segments: Mapping[int, Segment]) -> None:
    """``hdr_validate_digests``: every keyslot and segment a digest names exists."""
    for number, digest in digests.items():
        for slot in digest.keyslots:
            if slot not in keyslots:
                raise _fail(f"digests.{number} names no keyslot {slot}")
        for seg in digest.segments:
            if seg not in segments:
                raise _fail(f"digests.{number} names no segment {seg}")


def is_backup(segment: Segment) -> bool:
    """A backup segment (reencryption bookkeeping) carries a ``backup-*`` flag."""
    return any(flag.startswith(BACKUP_FLAG_PREFIX) for flag in segment.flags or ())


def _check_segment_order(segments: Mapping[int, Segment]) -> int:
    """Regular segments first, numbered from 0 without a gap; returns how many there are."""
    if not segments:
        raise _fail("segments is empty")
    backups = [number for number, segment in segments.items() if is_backup(segment)]
    first_backup = min(backups, default=len(segments))
    for number, segment in segments.items():
        if backups and not is_backup(segment) and number >= first_backup:
            raise _fail(f"segments.{number} is a regular segment behind backup segment "
                        f"{first_backup}")
    if first_backup == 0:
        raise _fail("segments has no regular segment")
    for number in range(len(segments)):
        if number not in segments:
            raise _fail(f"segments has a gap at {number}")
    return first_backup


def check_segments(segments: Mapping[int, Segment], digests: Mapping[int, Digest]) -> None:
    """``hdr_validate_segments``: order, one dynamic segment at the end, no overlap, digests."""
    regular = _check_segment_order(segments)
    for number in range(regular):
        segment = segments[number]
        if segment.size is None and number != regular - 1:
            raise _fail(f"segments.{number} is dynamic but not the last regular segment")
        if segment.size is not None and segment.offset + segment.size >= UINT64_LIMIT:
            raise _fail(f"segments.{number} offset + size overflows 64 bits")
        for other in range(regular):
            if other != number and _inside(segment.offset, segments[other]):
                raise _fail(f"segments.{number} overlaps segments.{other}")
    for number in segments:
        if not any(number in digest.segments for digest in digests.values()):
            raise _fail(f"segments.{number} (crypt) is bound to no digest")


def _inside(offset: int, segment: Segment) -> bool:
    end = UINT64_LIMIT if segment.size is None else segment.offset + segment.size
    return segment.offset <= offset < end


def check_keyslot_digests(keyslots: Mapping[int, Keyslot],
                          digests: Mapping[int, Digest]) -> None:
    """``LUKS2_keyslots_validate``: each ``luks2`` keyslot belongs to exactly one digest."""
    for number in keyslots:
        count = sum(number in digest.keyslots for digest in digests.values())
        if count != 1:
            raise _fail(f"keyslots.{number} is bound to {count} digests, not exactly 1")


def keyslots_area(config: Config) -> tuple[int, int]:
    """``[start, end)`` of the binary keyslots area: after both header copies."""
    start = 2 * (config.json_size + BINARY_HEADER_SIZE)
    return start, start + config.keyslots_size


def first_data_offset(segments: Mapping[int, Segment]) -> int:
    """The lowest offset of a regular segment; 0 (a detached header) wins outright."""
    return min((s.offset for s in segments.values() if not is_backup(s)), default=0)


def check_config(config: Config, segments: Mapping[int, Segment]) -> None:
    """``hdr_validate_config``: header and keyslots-area sizes; the data after the areas."""
    metadata_size = config.json_size + BINARY_HEADER_SIZE
    if metadata_size not in METADATA_SIZES:
        raise _fail(f"config.json_size {config.json_size} gives a header of {metadata_size} "
                    f"bytes, not one of 16 KiB ... 4 MiB")
    if config.keyslots_size % KEYSLOTS_ALIGNMENT or config.keyslots_size > MAX_KEYSLOTS_SIZE:
        raise _fail(f"config.keyslots_size {config.keyslots_size} is not a multiple of 4096 "
                    f"of at most {MAX_KEYSLOTS_SIZE}")
    data_offset = first_data_offset(segments)
    _, end = keyslots_area(config)
    if data_offset and data_offset < end:
        raise _fail(f"the data segment at {data_offset} lies inside the header or keyslots "
                    f"area (which ends at {end})")


def check_areas(keyslots: Mapping[int, Keyslot], config: Config) -> None:
    """``hdr_validate_areas``: each area non-empty, inside the keyslots area, not shared."""
    start, end = keyslots_area(config)
    for number, slot in keyslots.items():
        if slot.area_size == 0:
            raise _fail(f"keyslots.{number} area is empty")
        if slot.area_offset < start or slot.area_offset + slot.area_size > end:
            raise _fail(f"keyslots.{number} area [{slot.area_offset}, "
                        f"{slot.area_offset + slot.area_size}) lies outside the keyslots "
                        f"area [{start}, {end})")
        for other, neighbour in keyslots.items():
            if other != number and (neighbour.area_offset <= slot.area_offset
                                    < neighbour.area_offset + neighbour.area_size):
                raise _fail(f"keyslots.{number} area overlaps the area of keyslots.{other}")


def check_consistency(keyslots: Mapping[int, Keyslot], segments: Mapping[int, Segment],
                      digests: Mapping[int, Digest], config: Config,
                      tokens: Mapping[int, Mapping[str, Any]]) -> None:
    """Every rule above, in cryptsetup's order (tokens, digests, segments, config, areas)."""
    check_tokens(tokens, keyslots)
    check_digests(digests, keyslots, segments)
    check_segments(segments, digests)
    check_config(config, segments)
    check_areas(keyslots, config)
    check_keyslot_digests(keyslots, digests)
