"""Every field rule of the LUKS2 JSON metadata (spec v1.1.4 section 3), at its limits, with the
exact one-line message a refused value gets; the accepted limits round-trip unchanged."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.luks2.binary_header import BINARY_HEADER_SIZE, BinaryHeader
from cvm.formats.luks2.header_copy import header_checksum
from cvm.formats.luks2.json_fields import JsonObject, encode_b64, parse_id
from cvm.formats.luks2.metadata import (
    Argon2Kdf,
    Config,
    Digest,
    Keyslot,
    Metadata,
    Pbkdf2Kdf,
    Segment,
)

DELETE = object()
ARGON2 = {"type": "argon2id", "time": 4, "memory": 1024, "cpus": 4,
          "salt": encode_b64(bytes(32))}


def _valid() -> dict[str, Any]:
    meta = Metadata(
        {0: Keyslot(64, 0x8000, 258048, Pbkdf2Kdf("sha256", 1000, bytes(32)))},
        {0: Segment(16 << 20, None)},
        {0: Digest((0,), (0,), "sha256", 1000, bytes(32), bytes(32))},
        Config(12288, (16 << 20) - 0x8000),
    )
    value: dict[str, Any] = meta.to_json()
    return value


def _edited(*edits: tuple[str, object]) -> dict[str, Any]:
    value = copy.deepcopy(_valid())
    for path, item in edits:
        *parents, last = path.split(".")
        target = value
        for key in parents:
            target = target[key]
        if item is DELETE:
            del target[last]
        else:
            target[last] = item
    return value


def _range(where: str, low: int, high: int, got: object) -> str:
    return f"LUKS2 metadata: {where}: expected an integer in {low}..{high}, got {got!r}"


def _unsupported(where: str, value: str, allowed: str) -> str:
    return f"LUKS2 metadata: {where}: unsupported value {value!r} (cvm supports {allowed})"


INT_MAX = 0x7FFFFFFF
KDF = "keyslots.0.kdf"
AREA = "keyslots.0.area"
SEG = "segments.0"

REFUSED: dict[str, tuple[tuple[tuple[str, object], ...], str]] = {
    "kdf type": (((f"{KDF}.type", "scrypt"),),
                 _unsupported(f"{KDF}.type", "scrypt", "pbkdf2, argon2i, argon2id")),
    "kdf type not a string": (((f"{KDF}.type", 1),),
                              f"LUKS2 metadata: {KDF}.type: expected a string, got 1"),
    "pbkdf2 hash": (((f"{KDF}.hash", "md5"),),
                    _unsupported(f"{KDF}.hash", "md5", "sha1, sha256, sha512")),
    "pbkdf2 iterations 0": (((f"{KDF}.iterations", 0),), _range(f"{KDF}.iterations", 1,
                                                                   INT_MAX, 0)),
    "pbkdf2 iterations past INT_MAX": (((f"{KDF}.iterations", INT_MAX + 1),),
                                       _range(f"{KDF}.iterations", 1, INT_MAX, INT_MAX + 1)),
    "pbkdf2 iterations true": (((f"{KDF}.iterations", True),),
                               _range(f"{KDF}.iterations", 1, INT_MAX, True)),
    "pbkdf2 iterations as text": (((f"{KDF}.iterations", "1000"),),
                                  _range(f"{KDF}.iterations", 1, INT_MAX, "1000")),
    "pbkdf2 salt not base64": (((f"{KDF}.salt", "@@@"),),
                               f"LUKS2 metadata: {KDF}.salt: expected base64 text, got '@@@'"),
    "pbkdf2 salt not text": (((f"{KDF}.salt", 7),),
                             f"LUKS2 metadata: {KDF}.salt: expected base64 text, got 7"),
    "pbkdf2 salt not ASCII": (((f"{KDF}.salt", "sé"),),
                              f"LUKS2 metadata: {KDF}.salt: expected base64 text, got 'sé'"),
    "kdf member unknown": (((f"{KDF}.extra", 1),), f"LUKS2 metadata: {KDF}: unknown key 'extra'"),
    "kdf missing": (((f"{KDF}", DELETE),),
                    "LUKS2 metadata: keyslots.0: missing required key 'kdf'"),
    "argon2 time 0": (((KDF, {**ARGON2, "time": 0}),), _range(f"{KDF}.time", 1, INT_MAX, 0)),
    "argon2 memory 7": (((KDF, {**ARGON2, "memory": 7, "cpus": 1}),),
                        _range(f"{KDF}.memory", 8, INT_MAX, 7)),
    "argon2 cpus 0": (((KDF, {**ARGON2, "cpus": 0}),), _range(f"{KDF}.cpus", 1, 16777215, 0)),
    "argon2 cpus past 2^24-1": (((KDF, {**ARGON2, "cpus": 16777216}),),
                                _range(f"{KDF}.cpus", 1, 16777215, 16777216)),
    "argon2 memory under 8 KiB a thread": (
        ((KDF, {**ARGON2, "memory": 31}),),
        f"LUKS2 metadata: {KDF}.memory: expected at least 8 KiB per thread (32), got 31"),
    "argon2 salt of 7 bytes": (
        ((KDF, {**ARGON2, "salt": encode_b64(bytes(7))}),),
        f"LUKS2 metadata: {KDF}.salt: expected at least 8 bytes for Argon2, got "
        f"{encode_b64(bytes(7))!r}"),
    "argon2 member unknown": (((KDF, {**ARGON2, "iterations": 1}),),
                              f"LUKS2 metadata: {KDF}: unknown key 'iterations'"),
    "keyslot type": ((("keyslots.0.type", "luks1"),),
                     _unsupported("keyslots.0.type", "luks1", "luks2")),
    "keyslot not an object": ((("keyslots.0", []),),
                              "LUKS2 metadata: keyslots.0 is not a JSON object"),
    "keyslot member unknown": ((("keyslots.0.extra", 1),),
                               "LUKS2 metadata: keyslots.0: unknown key 'extra'"),
    "keyslot key_size 0": ((("keyslots.0.key_size", 0),),
                           _range("keyslots.0.key_size", 1, 1024, 0)),
    "keyslot key_size 1025": ((("keyslots.0.key_size", 1025),),
                              _range("keyslots.0.key_size", 1, 1024, 1025)),
    "priority 3": ((("keyslots.0.priority", 3),), _range("keyslots.0.priority", 0, 2, 3)),
    "priority -1": ((("keyslots.0.priority", -1),), _range("keyslots.0.priority", 0, 2, -1)),
    "af type": ((("keyslots.0.af.type", "luks2"),),
                _unsupported("keyslots.0.af.type", "luks2", "luks1")),
    "af stripes 0": ((("keyslots.0.af.stripes", 0),),
                     _range("keyslots.0.af.stripes", 1, INT_MAX, 0)),
    "af hash": ((("keyslots.0.af.hash", "sha384"),),
                _unsupported("keyslots.0.af.hash", "sha384", "sha1, sha256, sha512")),
    "af member unknown": ((("keyslots.0.af.extra", 1),),
                          "LUKS2 metadata: keyslots.0.af: unknown key 'extra'"),
    "area type": (((f"{AREA}.type", "datashift"),),
                  _unsupported(f"{AREA}.type", "datashift", "raw")),
    "area offset in hex": (((f"{AREA}.offset", "0x8000"),),
                           f"LUKS2 metadata: {AREA}.offset: expected a decimal string, "
                           f"got '0x8000'"),
    "area offset with a leading zero": (((f"{AREA}.offset", "032768"),),
                                        f"LUKS2 metadata: {AREA}.offset: expected a decimal "
                                        f"string, got '032768'"),
    "area offset as a number": (((f"{AREA}.offset", 32768),),
                                f"LUKS2 metadata: {AREA}.offset: expected a decimal string, "
                                f"got 32768"),
    "area size past 64 bits": (((f"{AREA}.size", str(1 << 64)),),
                               f"LUKS2 metadata: {AREA}.size: expected a 64-bit value, "
                               f"got '{1 << 64}'"),
    "area encryption": (((f"{AREA}.encryption", "aes-cbc-essiv:sha256"),),
                        _unsupported(f"{AREA}.encryption", "aes-cbc-essiv:sha256",
                                     "aes-xts-plain64")),
    "area key_size 0": (((f"{AREA}.key_size", 0),), _range(f"{AREA}.key_size", 1, 1024, 0)),
    "area key_size 1025": (((f"{AREA}.key_size", 1025),),
                           _range(f"{AREA}.key_size", 1, 1024, 1025)),
    "area key_size 48": (((f"{AREA}.key_size", 48),),
                         "LUKS2 metadata: keyslots.0: area key_size must be 32 or 64"),
    "area member unknown": (((f"{AREA}.extra", 1),),
                            f"LUKS2 metadata: {AREA}: unknown key 'extra'"),
    "segment type": (((f"{SEG}.type", "linear"),),
                     _unsupported(f"{SEG}.type", "linear", "crypt")),
    "segment size 0": (((f"{SEG}.size", "0"),),
                       f"LUKS2 metadata: {SEG}.size: expected \"dynamic\" or a non-zero size, "
                       f"got '0'"),
    "segment size text": (((f"{SEG}.size", "all"),),
                          f"LUKS2 metadata: {SEG}.size: expected a decimal string, got 'all'"),
    "segment size missing": (((f"{SEG}.size", DELETE),),
                             f"LUKS2 metadata: {SEG}: missing required key 'size'"),
    "segment sector 256": (((f"{SEG}.sector_size", 256),),
                           _range(f"{SEG}.sector_size", 512, 4096, 256)),
    "segment sector 8192": (((f"{SEG}.sector_size", 8192),),
                            _range(f"{SEG}.sector_size", 512, 4096, 8192)),
    "segment sector 1000": (((f"{SEG}.sector_size", 1000),),
                            f"LUKS2 metadata: {SEG}.sector_size: expected 512, 1024, 2048 or "
                            f"4096, got 1000"),
    "segment offset off its sectors": (((f"{SEG}.offset", str((16 << 20) + 512)),),
                                       f"LUKS2 metadata: {SEG}: not aligned to its sector size"),
    "segment size off its sectors": (((f"{SEG}.size", str((1 << 20) + 512)),),
                                     f"LUKS2 metadata: {SEG}: not aligned to its sector size"),
    "segment flags not a list": (((f"{SEG}.flags", "x"),),
                                 f"LUKS2 metadata: {SEG}.flags: expected an array of strings, "
                                 f"got 'x'"),
    "segment flags not strings": (((f"{SEG}.flags", [1]),),
                                  f"LUKS2 metadata: {SEG}.flags: expected an array of strings, "
                                  f"got [1]"),
    "segment iv_tweak": (((f"{SEG}.iv_tweak", "-1"),),
                         f"LUKS2 metadata: {SEG}.iv_tweak: expected a decimal string, "
                         f"got '-1'"),
    "segment encryption": (((f"{SEG}.encryption", "aes-xts-plain"),),
                           _unsupported(f"{SEG}.encryption", "aes-xts-plain",
                                        "aes-xts-plain64")),
    "segment member unknown": (((f"{SEG}.extra", 1),),
                               f"LUKS2 metadata: {SEG}: unknown key 'extra'"),
    "digest type": ((("digests.0.type", "argon2i"),),
                    _unsupported("digests.0.type", "argon2i", "pbkdf2")),
    "digest keyslot id not decimal": ((("digests.0.keyslots", ["a"]),),
                                      "LUKS2 metadata: digests.0.keyslots: 'a' is not a "
                                      "decimal id"),
    "digest keyslot id past 32 bits": ((("digests.0.keyslots", ["4294967296"]),),
                                       "LUKS2 metadata: digests.0.keyslots: '4294967296' is "
                                       "not a decimal id"),
    "digest keyslot id with a leading zero": ((("digests.0.keyslots", ["00"]),),
                                              "LUKS2 metadata: digests.0.keyslots: '00' is not "
                                              "a decimal id"),
    "digest keyslots not a list": ((("digests.0.keyslots", "0"),),
                                   "LUKS2 metadata: digests.0.keyslots: expected an array of "
                                   "strings, got '0'"),
    "digest iterations 0": ((("digests.0.iterations", 0),),
                            _range("digests.0.iterations", 1, INT_MAX, 0)),
    "digest hash": ((("digests.0.hash", "md5"),),
                    _unsupported("digests.0.hash", "md5", "sha1, sha256, sha512")),
    "digest empty": ((("digests.0.digest", ""),),
                     "LUKS2 metadata: digests.0.digest: expected a non-empty digest, got ''"),
    "digest member unknown": ((("digests.0.extra", 1),),
                              "LUKS2 metadata: digests.0: unknown key 'extra'"),
    "config json_size": ((("config.json_size", "12k"),),
                         "LUKS2 metadata: config.json_size: expected a decimal string, "
                         "got '12k'"),
    "config member unknown": ((("config.extra", 1),),
                              "LUKS2 metadata: config: unknown key 'extra'"),
    "config requirement": ((("config.requirements", {"mandatory": ["online-reencrypt"]}),),
                           "LUKS2 metadata: config.requirements: unsupported mandatory "
                           "requirement 'online-reencrypt'; cvm refuses to open this volume"),
    "config requirements member unknown": ((("config.requirements", {"optional": []}),),
                                           "LUKS2 metadata: config.requirements: unknown key "
                                           "'optional'"),
    "config not an object": ((("config", "x"),), "LUKS2 metadata: config is not a JSON object"),
    "token type not a string": ((("tokens.0", {"type": 5, "keyslots": []}),),
                                "LUKS2 metadata: tokens.0.type: expected a string, got 5"),
    "token without keyslots": ((("tokens.0", {"type": "t"}),),
                               "LUKS2 metadata: tokens.0: missing required key 'keyslots'"),
    "token type reserved": ((("tokens.0", {"type": "luks2-x", "keyslots": []}),),
                            "LUKS2 metadata: tokens.0: token type 'luks2-x' is reserved "
                            "(luks2-*)"),
    "token table key": ((("tokens", {"a": {"type": "t", "keyslots": []}}),),
                        "LUKS2 metadata: tokens: 'a' is not a decimal id"),
    "segments table key": ((("segments", {"x": {}}),),
                           "LUKS2 metadata: segments: 'x' is not a decimal id"),
    "digests not an object": ((("digests", []),),
                              "LUKS2 metadata: digests is not a JSON object"),
    "keyslots not an object": ((("keyslots", []),),
                               "LUKS2 metadata: keyslots is not a JSON object"),
    "top-level member unknown": ((("extra", {}),),
                                 "LUKS2 metadata: top level: unknown key 'extra'"),
    "segments missing": ((("segments", DELETE),),
                         "LUKS2 metadata: top level: missing required key 'segments'"),
}

ACCEPTED: dict[str, tuple[tuple[str, object], ...]] = {
    "pbkdf2 iterations 1 and hash sha1": ((f"{KDF}.iterations", 1), (f"{KDF}.hash", "sha1")),
    "pbkdf2 iterations INT_MAX": ((f"{KDF}.iterations", INT_MAX),),
    "argon2i at its minimum": ((KDF, {**ARGON2, "type": "argon2i", "time": 1, "memory": 8,
                                      "cpus": 1, "salt": encode_b64(bytes(8))}),),
    "argon2 with 2^24-1 threads": ((KDF, {**ARGON2, "memory": 8 * 16777215,
                                          "cpus": 16777215}),),
    "key sizes 1 and 1024": (("keyslots.0.key_size", 1), (f"{AREA}.key_size", 32)),
    "key size 1024": (("keyslots.0.key_size", 1024),),
    "priorities 0 and 2": (("keyslots.0.priority", 0),),
    "priority 2": (("keyslots.0.priority", 2),),
    "af stripes 1 and sha512": (("keyslots.0.af.stripes", 1), ("keyslots.0.af.hash", "sha512")),
    "sector size 512 with a 512-aligned fixed size": (
        (f"{SEG}.sector_size", 512), (f"{SEG}.offset", str((16 << 20) + 512)),
        (f"{SEG}.size", str(512))),
    "sector sizes 1024 and 2048": ((f"{SEG}.sector_size", 1024),),
    "sector size 2048": ((f"{SEG}.sector_size", 2048),),
    "largest iv_tweak and flags": ((f"{SEG}.iv_tweak", str((1 << 64) - 1)),
                                   (f"{SEG}.flags", ["x"])),
    "largest digest keyslot id is refused only as a dangling reference": (),
    "empty mandatory requirements and config flags": (
        ("config.requirements", {"mandatory": []}), ("config.flags", ["allow-discards"])),
    "a token with extra members": (("tokens.3", {"type": "t", "keyslots": ["0"], "x": [1]}),),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused_fields_are_named(case: str) -> None:
    edits, message = REFUSED[case]
    with pytest.raises(FormatError) as raised:
        Metadata.from_json(_edited(*edits))
    assert str(raised.value) == message


@pytest.mark.parametrize("case", ACCEPTED)
def test_fields_at_their_limits_round_trip(case: str) -> None:
    value = _edited(*ACCEPTED[case])
    meta = Metadata.from_json(value)
    assert meta.to_json() == value
    assert Metadata.parse(meta.to_area()) == meta


def test_the_parsed_values_are_the_written_ones() -> None:
    value = _edited((KDF, {**ARGON2, "type": "argon2i"}), ("keyslots.0.priority", 2),
                    (f"{SEG}.size", str(1 << 20)), (f"{SEG}.iv_tweak", "7"),
                    (f"{SEG}.sector_size", 512), ("config.flags", ["allow-discards"]))
    meta = Metadata.from_json(value)
    slot = meta.keyslots[0]
    assert slot.kdf == Argon2Kdf("argon2i", 4, 1024, 4, bytes(32))
    assert (slot.key_size, slot.area_offset, slot.area_size, slot.area_key_size) == (
        64, 0x8000, 258048, 64)
    assert (slot.af_stripes, slot.af_hash, slot.priority, slot.area_encryption) == (
        4000, "sha256", 2, "aes-xts-plain64")
    assert meta.segments[0] == Segment(16 << 20, 1 << 20, "aes-xts-plain64", 512, 7, None)
    assert meta.digests[0] == Digest((0,), (0,), "sha256", 1000, bytes(32), bytes(32))
    assert meta.config == Config(12288, (16 << 20) - 0x8000, ("allow-discards",), None)
    assert meta.digest_of_keyslot(0) == (0, meta.digests[0])
    bare = Metadata.from_json(_edited(("config.requirements", {})))
    assert bare.config.requirements == ()
    assert bare.to_json()["config"]["requirements"] == {"mandatory": []}
    with pytest.raises(FormatError) as raised:
        meta.digest_of_keyslot(5)
    assert str(raised.value) == "LUKS2 metadata: keyslot 5 has no digest"


def test_the_json_area_must_hold_the_text_and_its_terminator() -> None:
    meta = Metadata.from_json(_valid())
    probe = Metadata(meta.keyslots, meta.segments, meta.digests,
                     Config(999, meta.config.keyslots_size))
    size = len(probe.to_text().encode())  # the same with any three-digit json_size
    assert 100 <= size < 998
    fitting = Metadata(meta.keyslots, meta.segments, meta.digests,
                       Config(size + 1, meta.config.keyslots_size))
    assert fitting.to_area() == fitting.to_text().encode() + b"\0"
    full = Metadata(meta.keyslots, meta.segments, meta.digests,
                    Config(size, meta.config.keyslots_size))
    with pytest.raises(UsageError) as raised:
        full.to_area()
    assert str(raised.value) == (f"LUKS2 metadata of {size} bytes does not fit the {size}-byte "
                                 f"JSON area")


def test_ids_and_the_reader_itself() -> None:
    assert parse_id("0", "x") == 0
    assert parse_id("4294967295", "x") == 0xFFFFFFFF
    for bad in ("4294967296", "-1", "1.0", "", 1):
        with pytest.raises(FormatError, match=r"^LUKS2 metadata: x: .* is not a decimal id$"):
            parse_id(bad, "x")
    reader = JsonObject({"n": 5}, "here")
    assert str(reader.fail("missing", "a thing")) == (
        "LUKS2 metadata: here.missing: expected a thing, got None")
    assert reader.number("n", 5, 5) == 5
    with pytest.raises(FormatError, match=r"^LUKS2 metadata: here: unknown key 'n'$"):
        JsonObject({"n": 5}, "here").finish()
    with pytest.raises(FormatError, match=r"^LUKS2 metadata: here is not a JSON object$"):
        JsonObject([], "here")


# What cryptsetup 2.6's header check (``isLuks``, ``luksDump``) accepts of the cases cvm refuses:
# the keyslot, digest and KDF parameters it checks only when it opens a keyslot (types, hashes,
# costs, key sizes, priority, stripes, the area cipher); members it does not know (it ignores
# them); segment types and ciphers cvm does not implement; a segment offset off a 4096-byte
# sector (its check tests the size only) and sector sizes past 4096; a leading zero in a
# decimal string; and token types in the reserved ``luks2-`` namespace. Every other refused
# case cryptsetup refuses too, and every accepted limit it accepts.
CRYPTSETUP_ACCEPTS = frozenset({
    "kdf type", "pbkdf2 hash", "pbkdf2 iterations 0", "pbkdf2 iterations past INT_MAX",
    "pbkdf2 salt not base64", "pbkdf2 salt not ASCII", "kdf member unknown", "argon2 time 0",
    "argon2 memory 7", "argon2 cpus 0", "argon2 cpus past 2^24-1",
    "argon2 memory under 8 KiB a thread", "argon2 salt of 7 bytes", "argon2 member unknown",
    "keyslot type", "keyslot member unknown", "keyslot key_size 0", "keyslot key_size 1025",
    "priority 3", "priority -1", "af stripes 0", "af hash", "af member unknown",
    "area offset with a leading zero", "area encryption", "area key_size 0",
    "area key_size 1025", "area key_size 48", "area member unknown", "segment type",
    "segment sector 8192", "segment offset off its sectors", "segment encryption",
    "segment member unknown", "digest type", "digest iterations 0", "digest hash",
    "digest empty", "digest member unknown", "config member unknown",
    "config requirements member unknown", "token type reserved", "top-level member unknown",
})


def _sealed_image(path: Path, value: dict[str, Any]) -> None:
    """Both header copies of ``value`` with valid checksums, in a sparse 17 MiB file."""
    text = json.dumps(value, separators=(",", ":")).encode()
    with path.open("wb") as sink:
        for secondary in (False, True):
            binary = BinaryHeader(secondary, 0x4000, 3, "", "sha256", bytes(64),
                                  "6f3d5d0e-8a57-4a3e-9c1e-0d1c2b3a4f5e", "",
                                  0x4000 if secondary else 0, bytes(64))
            area = binary.to_bytes() + text.ljust(0x4000 - BINARY_HEADER_SIZE, b"\0")
            sink.write(area[:0x1C0] + header_checksum(area, "sha256") + area[0x200:])
        sink.truncate(0x8000 + (17 << 20))


@pytest.mark.interop
@pytest.mark.parametrize("case", [*REFUSED, *ACCEPTED])
def test_cryptsetup_header_check_on_the_same_json(case: str, tmp_path: Path,
                                                   require_tool: Callable[[str], str]) -> None:
    value = _edited(*(REFUSED[case][0] if case in REFUSED else ACCEPTED[case]))
    image = tmp_path / "header.img"
    _sealed_image(image, value)
    tool = require_tool("cryptsetup")
    is_luks = subprocess.run([tool, "isLuks", "--type", "luks2", str(image)],
                             capture_output=True, check=False)
    dump = subprocess.run([tool, "luksDump", str(image)], capture_output=True, check=False)
    accepts = case in ACCEPTED or case in CRYPTSETUP_ACCEPTS
    assert (is_luks.returncode == 0) is accepts
    assert (dump.returncode == 0) is accepts


def test_the_text_is_compact_utf8_in_cryptsetup_member_order() -> None:
    """json-c's plain form as cryptsetup 2.6 writes it: no spaces, members in its order,
    non-ASCII text as UTF-8 rather than escapes."""
    salt = "A" * 43 + "="
    expected = (
        '{"keyslots":{"0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,'
        '"hash":"sha256"},"area":{"type":"raw","offset":"32768","size":"258048",'
        '"encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"pbkdf2","hash":"sha256",'
        f'"iterations":1000,"salt":"{salt}"}}}}}},"tokens":{{}},"segments":{{"0":{{"type":"crypt",'
        '"offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64",'
        '"sector_size":4096}},"digests":{"0":{"type":"pbkdf2","keyslots":["0"],'
        f'"segments":["0"],"hash":"sha256","iterations":1000,"salt":"{salt}","digest":"{salt}"'
        '}},"config":{"json_size":"12288","keyslots_size":"16744448"}}')
    meta = Metadata.from_json(_valid())
    assert meta.to_text() == expected
    named = Metadata.from_json(_edited(("tokens.0", {"type": "t", "keyslots": [],
                                                     "name": "clé"})))
    assert '"name":"clé"' in named.to_text()
    assert b'"name":"cl\xc3\xa9"' in named.to_area()


def test_json_area_framing_is_named() -> None:
    cases = {
        b"{}": "LUKS2 metadata: JSON area is not NUL-terminated",
        b"{}\0x": "LUKS2 metadata: JSON area has bytes after its terminator",
        b"{}\0X": "LUKS2 metadata: JSON area has bytes after its terminator",
        b"{}\0\0\0 ": "LUKS2 metadata: JSON area has bytes after its terminator",
        b"{}" + bytes(4000) + b"\1" + bytes(100): "LUKS2 metadata: JSON area has bytes after its "
                                                 "terminator",
    }
    for area, message in cases.items():
        with pytest.raises(FormatError) as raised:
            Metadata.parse(area)
        assert str(raised.value) == message
    for area in (b"\0", b"\0" * 64):  # terminated at once: empty text, which is not JSON
        with pytest.raises(FormatError, match=r"^LUKS2 metadata: JSON area is not valid JSON "
                                              r"\(Expecting value"):
            Metadata.parse(area)


def test_numbers_default_to_zero_up_to_int_max() -> None:
    assert JsonObject({"n": 0}, "x").number("n") == 0
    assert JsonObject({"n": INT_MAX}, "x").number("n") == INT_MAX
    with pytest.raises(FormatError, match=r"^LUKS2 metadata: x\.n: expected an integer in "
                                          r"0\.\.2147483647, got -1$"):
        JsonObject({"n": -1}, "x").number("n")
