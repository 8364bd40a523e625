"""ID_BLOCK (56860 Table 75) and ID_AUTH_INFO (Table 76) against virtee/sev test vectors."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.snp.id_auth import (
    ID_AUTH_INFO_SIZE,
    IdAuthInfo,
    SnpPublicKey,
    SnpSignature,
)
from cvm.formats.snp.id_block import ID_BLOCK_SIZE, IdBlock

# virtee/sev tests/id-block.rs: the ID block for this launch digest, policy 0x30000.
LD_HEX = (
    "a14d638341e5674628fe1e02fbedebe5e5ab4faf1dd72d8966068e615bb99efd"
    "13d214b35c231715b38e263dc6059745"
)
ID_BLOCK_B64 = (
    "oU1jg0HlZ0Yo/h4C++3r5eWrT68d1y2JZgaOYVu5nv0T0hSzXCMXFbOOJj3GBZdFAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAABAAAAAAAAAAAAAwAAAAAA"
)
ID_KEY_DIGEST_B64 = "WfssaG36T+9J84M5qndckAUcKNVzg93DuvO160sUlt87DbvcuuX+J2d6ZEggdz/i"
AUTHOR_KEY_DIGEST_B64 = "7tgRafsMteDsNHlPEo/U4MSkb2fGWhrfqB/LJLzAiMJyNpt//D6ytq9qQoShs2xf"

scalars = st.integers(0, (1 << 384) - 1)
keys = st.builds(SnpPublicKey, qx=scalars, qy=scalars)
signatures = st.builds(SnpSignature, r=scalars, s=scalars)
blocks = st.builds(
    IdBlock,
    ld=st.binary(min_size=48, max_size=48),
    family_id=st.binary(min_size=16, max_size=16),
    image_id=st.binary(min_size=16, max_size=16),
    guest_svn=st.integers(0, (1 << 32) - 1),
    policy=st.integers(0, (1 << 64) - 1),
)


def test_id_block_known_answer() -> None:
    data = base64.b64decode(ID_BLOCK_B64)
    block = IdBlock.from_bytes(data)
    assert block.ld.hex() == LD_HEX
    assert block.policy == 0x30000
    assert block.version == 1
    assert IdBlock(bytes.fromhex(LD_HEX)).to_bytes() == data


@given(blocks)
def test_id_block_round_trip(block: IdBlock) -> None:
    data = block.to_bytes()
    assert len(data) == ID_BLOCK_SIZE
    assert IdBlock.from_bytes(data) == block


def test_id_block_version_must_be_one() -> None:
    data = bytearray(IdBlock(bytes(48)).to_bytes())
    data[0x50] = 2
    with pytest.raises(FormatError):
        IdBlock.from_bytes(bytes(data))


def test_id_auth_vector(vectors: Path) -> None:
    folder = vectors / "snp" / "virtee-sev" / "tests" / "measurement"
    data = (folder / "test_auth_block.bin").read_bytes()
    auth = IdAuthInfo.from_bytes(data)
    assert auth.to_bytes() == data
    assert auth.author_key is not None
    assert base64.b64encode(auth.id_key.digest()).decode() == ID_KEY_DIGEST_B64
    assert base64.b64encode(auth.author_key.digest()).decode() == AUTHOR_KEY_DIGEST_B64
    assert auth.id_block_sig.to_bytes() == (folder / "test_id_sig.bin").read_bytes()
    assert auth.id_key_sig is not None
    assert auth.id_key_sig.to_bytes() == (folder / "test_auth_sig.bin").read_bytes()


@given(signatures, keys, st.one_of(st.none(), st.tuples(signatures, keys)))
def test_id_auth_round_trip(
    sig: SnpSignature, key: SnpPublicKey, author: tuple[SnpSignature, SnpPublicKey] | None
) -> None:
    auth = IdAuthInfo(sig, key, *(author or (None, None)))
    data = auth.to_bytes()
    assert len(data) == ID_AUTH_INFO_SIZE
    assert IdAuthInfo.from_bytes(data) == auth


@pytest.mark.parametrize(
    ("offset", "value"), [(0x0, 2), (0x4, 3), (0x8, 1), (0x240, 3), (0x40 + 0x47, 1)]
)
def test_id_auth_strict(vectors: Path, offset: int, value: int) -> None:
    path = vectors / "snp" / "virtee-sev" / "tests" / "measurement" / "test_auth_block.bin"
    data = bytearray(path.read_bytes())
    data[offset] = value
    with pytest.raises(FormatError):
        IdAuthInfo.from_bytes(bytes(data))


def test_id_auth_without_author_rejects_stray_author_bytes() -> None:
    auth = IdAuthInfo(SnpSignature(1, 2), SnpPublicKey(3, 4))
    data = bytearray(auth.to_bytes())
    assert int.from_bytes(data[4:8], "little") == 0
    data[0x880] = 2
    with pytest.raises(FormatError):
        IdAuthInfo.from_bytes(bytes(data))
