"""Guest policy (56860 Table 9), platform info (Table 23) and signer info (Table 22)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.platform_info import PlatformInfo
from cvm.formats.snp.signer_info import SignerInfo, SigningKey


def test_qemu_default_policy() -> None:
    assert GuestPolicy(smt=True).to_int() == 0x30000
    assert GuestPolicy.from_int(0xB0000) == GuestPolicy(smt=True, debug=True)


def test_policy_bit_17_must_be_one_and_high_bits_zero() -> None:
    with pytest.raises(FormatError):
        GuestPolicy.from_int(0x10000)
    with pytest.raises(FormatError):
        GuestPolicy.from_int(0x20000 | 1 << 26)
    with pytest.raises(FormatError):
        GuestPolicy.from_bytes(bytes(7))
    with pytest.raises(UsageError):
        GuestPolicy(abi_major=256)


def test_policy_flags_each_own_bit() -> None:
    seen = set()
    for name in GuestPolicy().flags():
        value = GuestPolicy(**{name: True}).to_int() ^ 0x20000
        assert value and value & (value - 1) == 0 and value not in seen
        seen.add(value)


@given(st.integers(0, (1 << 26) - 1))
def test_policy_round_trip(value: int) -> None:
    value |= 1 << 17
    policy = GuestPolicy.from_int(value)
    assert policy.to_int() == value
    assert GuestPolicy.from_bytes(policy.to_bytes()) == policy


@given(st.integers(0, (1 << 64) - 1))
def test_policy_random_values(value: int) -> None:
    try:
        policy = GuestPolicy.from_int(value)
    except FormatError:
        assert not value & 1 << 17 or value >> 26
        return
    assert policy.to_int() == value


@given(st.integers(0, (1 << 64) - 1))
def test_platform_info_round_trip(value: int) -> None:
    try:
        info = PlatformInfo.from_int(value)
    except FormatError:
        assert value & ~0xBF
        return
    assert info.to_int() == value
    assert PlatformInfo.from_bytes(info.to_bytes()) == info


def test_platform_info_names() -> None:
    assert PlatformInfo.from_int(1) == PlatformInfo(smt_en=True)
    assert PlatformInfo.from_int(0x20).alias_check_complete
    with pytest.raises(FormatError):
        PlatformInfo.from_int(0x40)


@given(st.integers(0, (1 << 32) - 1))
def test_signer_info_round_trip(value: int) -> None:
    try:
        info = SignerInfo.from_int(value)
    except FormatError:
        assert value >> 5 or (value >> 2 & 7) not in (0, 1, 7)
        return
    assert info.to_int() == value


def test_signer_info_values() -> None:
    assert SignerInfo.from_int(0) == SignerInfo()
    assert SignerInfo.from_int(0b111_10).signing_key is SigningKey.NONE
    assert SignerInfo.from_int(0b111_10).mask_chip_key
    assert "VCEK" in str(SignerInfo())
