"""Human-readable and JSON dumps of a LUKS2 header, in the shape of ``cryptsetup luksDump``.

The text mirrors cryptsetup 2.6's ``luksDump`` sections (header, data segments, keyslots,
tokens, digests) so users can compare the two; the JSON form is the metadata object of LUKS2
On-Disk Format Specification v1.1.4 section 3, as ``luksDump --dump-json-metadata`` prints it.
Both are checked line for line against cryptsetup's own output on the same headers
(``tests/disk/test_dump.py``, ``tests/interop/test_cryptsetup.py``).

Public API: :func:`dump_text` and :func:`dump_json` (``compact=True`` gives the on-disk
text).
"""

from __future__ import annotations

import json

from cvm.disk.volume import Luks2Volume
from cvm.formats.luks2.metadata import Metadata, Pbkdf2Kdf

_PRIORITY = {0: "ignored", 1: "normal", 2: "preferred", None: "normal"}  # the only ones parsed
_HEX_INDENT = "\t" + " " * 12
_INDENT = "  "  # json-c's pretty layout


def _hex_lines(data: bytes, indent: str) -> str:
    rows = ["".join(f"{b:02x} " for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    return f"\n{indent}".join(rows)


def _config_lines(meta: Metadata) -> list[str]:
    """Flags: each followed by a space (as cryptsetup prints them), then a blank line (a
    header with mandatory requirements is refused before it is dumped)."""
    flags = "".join(f"{flag} " for flag in meta.config.flags or ()) or "(no flags)"
    return [f"Flags:       \t{flags}", ""]


def _segment_lines(meta: Metadata) -> list[str]:
    lines = ["Data segments:"]
    for number in sorted(meta.segments):
        seg = meta.segments[number]
        lines += [
            f"  {number}: crypt",
            f"\toffset: {seg.offset} [bytes]",
            f"\tlength: {'(whole device)' if seg.size is None else f'{seg.size} [bytes]'}",
            f"\tcipher: {seg.encryption}",
            f"\tsector: {seg.sector_size} [bytes]",
        ]
        if seg.flags:
            lines.append(f"\tflags : {', '.join(seg.flags)}")
        lines.append("")
    return lines


def _keyslot_lines(meta: Metadata) -> list[str]:
    lines = ["Keyslots:"]
    for number in sorted(meta.keyslots):
        slot = meta.keyslots[number]
        digest_id, digest = meta.digest_of_keyslot(number)  # exactly one (consistency)
        unbound = "" if digest.segments else " (unbound)"  # as cryptsetup: no segment
        lines += [
            f"  {number}: luks2{unbound}",
            f"\tKey:        {slot.key_size * 8} bits",
            f"\tPriority:   {_PRIORITY[slot.priority]}",
            f"\tCipher:     {slot.area_encryption}",
            f"\tCipher key: {slot.area_key_size * 8} bits",
        ]
        kdf = slot.kdf
        if isinstance(kdf, Pbkdf2Kdf):
            lines += ["\tPBKDF:      pbkdf2", f"\tHash:       {kdf.hash}",
                      f"\tIterations: {kdf.iterations}"]
        else:
            lines += [f"\tPBKDF:      {kdf.type}", f"\tTime cost:  {kdf.time}",
                      f"\tMemory:     {kdf.memory}", f"\tThreads:    {kdf.cpus}"]
        lines += [
            f"\tSalt:       {_hex_lines(kdf.salt, _HEX_INDENT)}",
            f"\tAF stripes: {slot.af_stripes}",
            f"\tAF hash:    {slot.af_hash}",
            f"\tArea offset:{slot.area_offset} [bytes]",
            f"\tArea length:{slot.area_size} [bytes]",
            f"\tDigest ID:  {digest_id}",
        ]
    return lines


def dump_text(volume: Luks2Volume) -> str:
    """What ``cryptsetup luksDump`` prints for the header, less the final newline."""
    binary, meta = volume.header.binary, volume.metadata
    lines = [
        "LUKS header information",
        "Version:       \t2",
        f"Epoch:         \t{binary.seqid}",
        f"Metadata area: \t{binary.hdr_size} [bytes]",
        f"Keyslots area: \t{meta.config.keyslots_size} [bytes]",
        f"UUID:          \t{binary.uuid}",
        f"Label:         \t{binary.label or '(no label)'}",
        f"Subsystem:     \t{binary.subsystem or '(no subsystem)'}",
        *_config_lines(meta),
        *_segment_lines(meta),
        *_keyslot_lines(meta),
        "Tokens:",
    ]
    for number in sorted(meta.tokens):
        token = meta.tokens[number]
        lines.append(f"  {number}: {token['type']}")
        lines += [f"\tKeyslot:    {k}" for k in token["keyslots"]]
    lines.append("Digests:")
    for number in sorted(meta.digests):
        digest = meta.digests[number]
        lines += [
            f"  {number}: pbkdf2",
            f"\tHash:       {digest.hash}",
            f"\tIterations: {digest.iterations}",
            f"\tSalt:       {_hex_lines(digest.salt, _HEX_INDENT)}",
            f"\tDigest:     {_hex_lines(digest.digest, _HEX_INDENT)}",
        ]
    return "\n".join(lines)


def _pretty(value: object, depth: int) -> str:
    """``value`` in json-c's pretty layout at nesting ``depth``."""
    if isinstance(value, dict):
        opening, closing = "{", "}"
        items = [f"{json.dumps(k, ensure_ascii=False)}:{_pretty(v, depth + 1)}"
                 for k, v in value.items()]
    elif isinstance(value, list):
        opening, closing = "[", "]"
        items = [_pretty(v, depth + 1) for v in value]
    else:
        return json.dumps(value, ensure_ascii=False)
    inner = "".join(f"{_INDENT * (depth + 1)}{item},\n" for item in items)[:-2]
    return f"{opening}\n{inner}{chr(10) if items else ''}{_INDENT * depth}{closing}"


def dump_json(volume: Luks2Volume, compact: bool = False) -> str:
    """The JSON metadata as ``cryptsetup luksDump --dump-json-metadata`` prints it, without
    a final newline as it does: json-c's pretty layout (two spaces a level, no space after a
    colon, an empty object or array opened and closed on two lines); ``compact``: the on-disk
    text."""
    if compact:
        return volume.metadata.to_text()
    return _pretty(volume.metadata.to_json(), 0)
