"""Human-readable and JSON dumps of a LUKS2 header, in the shape of ``cryptsetup luksDump``.

The text mirrors cryptsetup 2.6's ``luksDump`` sections (header, data segments, keyslots,
tokens, digests) so users can compare the two; the JSON form is the metadata object of LUKS2
On-Disk Format Specification v1.1.4 section 3, as ``luksDump --dump-json-metadata`` prints it.

Public API: :func:`dump_text` and :func:`dump_json` (``indent=None`` gives the on-disk compact
text).
"""

from __future__ import annotations

import json

from cvm.disk.volume import Luks2Volume
from cvm.formats.luks2.metadata import Argon2Kdf, Pbkdf2Kdf

_PRIORITY = {0: "ignored", 1: "normal", 2: "high", None: "normal"}


def _hex_lines(data: bytes, indent: str) -> str:
    rows = ["".join(f"{b:02x} " for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    return f"\n{indent}".join(rows)


def dump_text(volume: Luks2Volume) -> str:
    binary, meta = volume.header.binary, volume.metadata
    flags = " ".join(meta.config.flags or ()) or "(no flags)"
    lines = [
        "LUKS header information",
        "Version:       \t2",
        f"Epoch:         \t{binary.seqid}",
        f"Metadata area: \t{binary.hdr_size} [bytes]",
        f"Keyslots area: \t{meta.config.keyslots_size} [bytes]",
        f"UUID:          \t{binary.uuid}",
        f"Label:         \t{binary.label or '(no label)'}",
        f"Subsystem:     \t{binary.subsystem or '(no subsystem)'}",
        f"Flags:       \t{flags}",
        "",
        "Data segments:",
    ]
    for number, seg in meta.segments.items():
        lines += [
            f"  {number}: crypt",
            f"\toffset: {seg.offset} [bytes]",
            f"\tlength: {'(whole device)' if seg.size is None else f'{seg.size} [bytes]'}",
            f"\tcipher: {seg.encryption}",
            f"\tsector: {seg.sector_size} [bytes]",
        ]
    lines += ["", "Keyslots:"]
    for number, slot in meta.keyslots.items():
        digest_id = next((n for n, d in meta.digests.items() if number in d.keyslots), None)
        lines += [
            f"  {number}: luks2",
            f"\tKey:        {slot.key_size * 8} bits",
            f"\tPriority:   {_PRIORITY.get(slot.priority, str(slot.priority))}",
            f"\tCipher:     {slot.area_encryption}",
            f"\tCipher key: {slot.area_key_size * 8} bits",
        ]
        kdf = slot.kdf
        if isinstance(kdf, Pbkdf2Kdf):
            lines += ["\tPBKDF:      pbkdf2", f"\tHash:       {kdf.hash}",
                      f"\tIterations: {kdf.iterations}"]
        elif isinstance(kdf, Argon2Kdf):
            lines += [f"\tPBKDF:      {kdf.type}", f"\tTime cost:  {kdf.time}",
                      f"\tMemory:     {kdf.memory}", f"\tThreads:    {kdf.cpus}"]
        lines += [
            f"\tSalt:       {_hex_lines(kdf.salt, chr(9) + ' ' * 12)}",
            f"\tAF stripes: {slot.af_stripes}",
            f"\tAF hash:    {slot.af_hash}",
            f"\tArea offset:{slot.area_offset} [bytes]",
            f"\tArea length:{slot.area_size} [bytes]",
            f"\tDigest ID:  {'-' if digest_id is None else digest_id}",
        ]
    lines.append("Tokens:")
    for number, token in meta.tokens.items():
        lines.append(f"  {number}: {token['type']}")
        lines += [f"\tKeyslot:    {k}" for k in token["keyslots"]]
    lines.append("Digests:")
    for number, digest in meta.digests.items():
        lines += [
            f"  {number}: pbkdf2",
            f"\tHash:       {digest.hash}",
            f"\tIterations: {digest.iterations}",
            f"\tSalt:       {_hex_lines(digest.salt, chr(9) + ' ' * 12)}",
            f"\tDigest:     {_hex_lines(digest.digest, chr(9) + ' ' * 12)}",
        ]
    return "\n".join(lines)


def dump_json(volume: Luks2Volume, indent: int | None = 2) -> str:
    """The JSON metadata; ``indent=None`` gives the compact on-disk text."""
    if indent is None:
        return volume.metadata.to_text()
    return json.dumps(volume.metadata.to_json(), indent=indent)
