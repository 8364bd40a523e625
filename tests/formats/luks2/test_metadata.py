"""LUKS2 JSON metadata (spec v1.1.4 section 3): round trips and one-line errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.luks2.json_fields import encode_b64
from cvm.formats.luks2.metadata import (
    Argon2Kdf,
    Config,
    Digest,
    Keyslot,
    Metadata,
    Pbkdf2Kdf,
    Segment,
)

KEYSLOTS_START = 0x8000
SALT = st.binary(min_size=32, max_size=32)


@st.composite
def metadatas(draw: st.DrawFn) -> Metadata:
    count = draw(st.integers(0, 4))
    numbers = draw(st.lists(st.integers(0, 31), min_size=count, max_size=count, unique=True))
    keyslots: dict[int, Keyslot] = {}
    for index, number in enumerate(numbers):
        kdf = draw(st.one_of(
            st.builds(Pbkdf2Kdf, st.sampled_from(["sha256", "sha512"]), st.integers(1, 10**6),
                      SALT),
            st.builds(Argon2Kdf, st.sampled_from(["argon2i", "argon2id"]), st.integers(1, 10),
                      st.integers(32, 2**20), st.integers(1, 4), SALT),
        ))
        keyslots[number] = Keyslot(64, KEYSLOTS_START + index * 258048, 258048, kdf,
                                   priority=draw(st.sampled_from([None, 0, 1, 2])))
    sector = draw(st.sampled_from([512, 4096]))
    segment = Segment(16 << 20, draw(st.one_of(st.none(), st.integers(1, 2**40).map(
        lambda n: n * sector))), sector_size=sector, iv_tweak=draw(st.integers(0, 2**64 - 1)))
    digest = Digest(tuple(numbers), (0,), "sha256", draw(st.integers(1, 10**6)), draw(SALT),
                    draw(SALT))
    tokens = {
        draw(st.integers(0, 31)): {"type": draw(st.sampled_from(["systemd-tpm2", "cvm"])),
                                   "keyslots": [str(n) for n in numbers[:1]],
                                   "blob": draw(st.text(max_size=20))}
        for _ in range(draw(st.integers(0, 1)))
    }
    config = Config(12288, (16 << 20) - 0x8000,
                    flags=draw(st.sampled_from([None, ("allow-discards",)])))
    return Metadata(keyslots, {0: segment}, {0: digest}, config, tokens)


@settings(deadline=None)
@given(metadatas())
def test_round_trip(meta: Metadata) -> None:
    area = meta.to_area()
    assert len(area) == meta.config.json_size
    parsed = Metadata.parse(area)
    assert parsed == meta
    assert parsed.to_area() == area


def _valid() -> dict[str, Any]:
    meta = Metadata(
        {0: Keyslot(64, 0x8000, 258048, Pbkdf2Kdf("sha256", 1000, bytes(32)))},
        {0: Segment(16 << 20, None)},
        {0: Digest((0,), (0,), "sha256", 1000, bytes(32), bytes(32))},
        Config(12288, (16 << 20) - 0x8000),
    )
    value: dict[str, Any] = meta.to_json()
    return value


def _area(value: object) -> bytes:
    return json.dumps(value).encode().ljust(12288, b"\0")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("keyslots", "0", "kdf"), "missing required key 'kdf'"),
        (("segments", "0", "encryption"), "missing required key 'encryption'"),
        (("digests", "0", "digest"), "missing required key 'digest'"),
        (("config", "json_size"), "missing required key 'json_size'"),
        (("tokens",), "missing required key 'tokens'"),
    ],
)
def test_missing_required_key(path: tuple[str, ...], message: str) -> None:
    value = _valid()
    target = value
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    with pytest.raises(FormatError, match=message):
        Metadata.parse(_area(value))


def test_unknown_key_and_unknown_values() -> None:
    value = _valid()
    value["keyslots"]["0"]["surprise"] = 1
    with pytest.raises(FormatError, match="unknown key 'surprise'"):
        Metadata.parse(_area(value))
    value = _valid()
    value["keyslots"]["0"]["kdf"]["type"] = "scrypt"
    with pytest.raises(FormatError, match="unsupported value 'scrypt'"):
        Metadata.parse(_area(value))
    value = _valid()
    value["config"]["requirements"] = {"mandatory": ["online-reencrypt-v2"]}
    with pytest.raises(FormatError, match="mandatory requirement"):
        Metadata.parse(_area(value))
    value = _valid()
    value["digests"]["0"]["keyslots"] = ["7"]
    with pytest.raises(FormatError, match="names no keyslot 7"):
        Metadata.parse(_area(value))
    value = _valid()
    value["tokens"]["0"] = {"type": "luks2-keyring", "keyslots": []}
    with pytest.raises(FormatError, match="reserved"):
        Metadata.parse(_area(value))


def test_bad_json_area() -> None:
    with pytest.raises(FormatError, match="not NUL-terminated"):
        Metadata.parse(b"{}")
    with pytest.raises(FormatError, match="not valid JSON"):
        Metadata.parse(b"{nope\0")
    with pytest.raises(FormatError, match="after its terminator"):
        Metadata.parse(b"{}\0x")


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_random_areas_raise_only_format_error(data: bytes) -> None:
    with pytest.raises(FormatError):
        Metadata.parse(data + b"\0")


@settings(deadline=None)
@given(st.integers(0, 400), st.integers(1, 255))
def test_mutated_json_is_format_error_or_valid(pos: int, bit: int) -> None:
    area = bytearray(_area(_valid()))
    area[pos] ^= bit
    try:
        parsed = Metadata.parse(bytes(area))
    except FormatError:
        return
    assert Metadata.parse(parsed.to_area()) == parsed


def test_costs_the_kdf_cannot_run_are_format_errors() -> None:
    value = _valid()
    value["keyslots"]["0"]["kdf"] = {"type": "argon2id", "time": 4, "memory": 31, "cpus": 4,
                                     "salt": encode_b64(bytes(32))}
    with pytest.raises(FormatError, match=r"at least 8 KiB per thread \(32\)"):
        Metadata.parse(_area(value))
    value["keyslots"]["0"]["kdf"]["memory"] = 32
    assert Metadata.parse(_area(value)).keyslots[0].kdf.salt == bytes(32)
    value["keyslots"]["0"]["kdf"]["salt"] = encode_b64(bytes(7))
    with pytest.raises(FormatError, match="at least 8 bytes for Argon2"):
        Metadata.parse(_area(value))
    value["keyslots"]["0"]["kdf"]["salt"] = encode_b64(bytes(8))
    Metadata.parse(_area(value))
    value["digests"]["0"]["digest"] = ""
    with pytest.raises(FormatError, match="a non-empty digest"):
        Metadata.parse(_area(value))
