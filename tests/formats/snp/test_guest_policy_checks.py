"""The SNP guest policy's refusals (56860 Table 9) with their messages, each flag's own bit, the
byte order of the u64 and how a policy prints."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.guest_policy import FLAG_BITS, KNOWN_BITS_MASK, GuestPolicy


def test_the_known_bits_are_the_abi_bytes_bit_17_and_the_flags() -> None:
    assert KNOWN_BITS_MASK == 0x03FF_FFFF
    assert FLAG_BITS == {
        "smt": 16, "migrate_ma": 18, "debug": 19, "single_socket": 20, "cxl_allow": 21,
        "mem_aes_256_xts": 22, "rapl_dis": 23, "ciphertext_hiding_dram": 24,
        "page_swap_disable": 25,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "guest policy: -1 is not a u64"),
        (1 << 64, f"guest policy: {1 << 64} is not a u64"),
        (0, "guest policy 0x0: reserved bit 17 must be one"),
        (0xFFFF_FFFF_FFFD_FFFF, "guest policy 0xfffffffffffdffff: reserved bit 17 must be one"),
        (0x20000 | 1 << 26, "guest policy 0x4020000: reserved bits 0x4000000 are set"),
        ((1 << 64) - 1,
         "guest policy 0xffffffffffffffff: reserved bits 0xfffffffffc000000 are set"),
    ],
)
def test_a_policy_outside_the_table_is_refused_by_name(value: int, message: str) -> None:
    with pytest.raises(FormatError) as refused:
        GuestPolicy.from_int(value)
    assert str(refused.value) == message


def test_the_largest_policy_parses_every_field() -> None:
    policy = GuestPolicy.from_int(0x03FF_FFFF)
    assert (policy.abi_major, policy.abi_minor) == (0xFF, 0xFF)
    assert all(policy.flags().values()) and len(policy.flags()) == 9
    assert GuestPolicy.from_int(0x0002_1234) == GuestPolicy(abi_minor=0x34, abi_major=0x12)


@pytest.mark.parametrize(("name", "bit"), list(FLAG_BITS.items()))
def test_each_flag_is_its_own_bit_both_ways(name: str, bit: int) -> None:
    policy = GuestPolicy.from_int(0x20000 | 1 << bit)
    assert policy.flags() == {flag: flag == name for flag in FLAG_BITS}
    assert policy.to_int() == 0x20000 | 1 << bit


def test_the_u64_is_little_endian() -> None:
    policy = GuestPolicy(abi_minor=0x37, abi_major=1, smt=True, debug=True)
    assert policy.to_bytes() == bytes([0x37, 0x01, 0x0B, 0, 0, 0, 0, 0])
    assert GuestPolicy.from_bytes(bytes([0x37, 0x01, 0x0B, 0, 0, 0, 0, 0])) == policy
    for size in (7, 9):
        with pytest.raises(FormatError) as refused:
            GuestPolicy.from_bytes(bytes(size))
        assert str(refused.value) == f"guest policy: expected 8 bytes, got {size}"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"abi_minor": 256}, "guest policy abi_minor: 256 is not a byte value"),
        ({"abi_major": -1}, "guest policy abi_major: -1 is not a byte value"),
        ({"abi_major": True}, "guest policy abi_major: True is not a byte value"),
        ({"abi_minor": 1.0}, "guest policy abi_minor: 1.0 is not a byte value"),
        ({"debug": 1}, "guest policy debug: expected a bool"),
        ({"page_swap_disable": None}, "guest policy page_swap_disable: expected a bool"),
    ],
)
def test_a_policy_built_with_a_wrong_field_is_refused_by_name(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError) as refused:
        GuestPolicy(**fields)  # type: ignore[arg-type]
    assert str(refused.value) == message


def test_the_byte_fields_take_0_to_255() -> None:
    assert GuestPolicy(abi_minor=0, abi_major=255).to_int() == 0x2FF00


def test_a_policy_prints_its_value_abi_and_flags() -> None:
    assert str(GuestPolicy()) == "0x20000 (abi>=0.0, flags none)"
    printed = str(GuestPolicy(abi_major=1, abi_minor=55, smt=True, debug=True))
    assert printed == "0xb0137 (abi>=1.55, flags smt,debug)"
