"""The secrets page and the CPUID page: each field's offset and each refusal, pinned.

The firmware writes the secrets page (the four VMPCKs a guest's messages are sealed with)
and checks the CPUID page the host proposes; a field read from the wrong place or a count let
through here hands a guest the wrong key or a CPUID value nobody checked.
"""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.cpuid_page import CPUID_COUNT_MAX, CpuidFunction, CpuidPage
from cvm.formats.snp.secrets_page import SECRETS_PAGE_SIZE, SecretsPage

KEYS = (b"\x00" * 32, b"\x11" * 32, b"\x22" * 32, b"\x33" * 32)

# -- the secrets page ----------------------------------------------------------------------------


def _full_page() -> SecretsPage:
    return SecretsPage(
        vmpcks=KEYS,
        fms=0x00A0_0F11,
        version=2,
        imien=True,
        gosvw=bytes(range(16)),
        guest_os_area=bytes(range(0x60)),
        vmsa_tweak_bitmap=bytes(range(0x40, 0x80)),
        svsm_base=0x1122_3344_5566_7788,
        svsm_size=0x40_0000,
        svsm_caa=0x8000_1000,
        svsm_max_version=1,
        svsm_guest_vmpl=2,
        tsc_factor=0xDEAD_BEEF,
    )


def test_each_field_of_the_secrets_page_is_at_its_offset() -> None:
    data = _full_page().to_bytes()
    assert len(data) == SECRETS_PAGE_SIZE
    assert data[0:4] == bytes([2, 0, 0, 0])
    assert data[4:8] == bytes([1, 0, 0, 0])
    assert data[8:12] == (0x00A0_0F11).to_bytes(4, "little") and data[12:16] == bytes(4)
    assert data[0x10:0x20] == bytes(range(16))
    for index, key in enumerate(KEYS):
        assert data[0x20 + 32 * index : 0x40 + 32 * index] == key
    assert data[0xA0:0x100] == bytes(range(0x60))
    assert data[0x100:0x140] == bytes(range(0x40, 0x80))
    assert data[0x140:0x148] == (0x1122_3344_5566_7788).to_bytes(8, "little")
    assert data[0x148:0x150] == (0x40_0000).to_bytes(8, "little")
    assert data[0x150:0x158] == (0x8000_1000).to_bytes(8, "little")
    assert data[0x158:0x15C] == bytes([1, 0, 0, 0]) and data[0x15C] == 2
    assert data[0x160:0x164] == (0xDEAD_BEEF).to_bytes(4, "little")
    assert not any(data[0x164:]) and not any(data[0x15D:0x160])


def test_each_field_of_the_secrets_page_is_read_back() -> None:
    page = _full_page()
    assert SecretsPage.from_bytes(page.to_bytes()) == page
    assert SecretsPage.from_bytes(SecretsPage(KEYS).to_bytes()).imien is False


def test_each_vmpck_is_its_own_key() -> None:
    page = SecretsPage.from_bytes(SecretsPage(KEYS).to_bytes())
    assert [page.vmpck(index) for index in range(4)] == list(KEYS)
    for index in (-1, 4):
        with pytest.raises(UsageError) as caught:
            page.vmpck(index)
        assert str(caught.value) == f"VMPCK index {index} is not 0..3"


@pytest.mark.parametrize(
    "vmpcks", [KEYS[:3], (*KEYS, KEYS[0]), (KEYS[0], KEYS[1], KEYS[2], bytes(31))]
)
def test_a_secrets_page_holds_four_32_byte_keys(vmpcks: tuple[bytes, ...]) -> None:
    with pytest.raises(UsageError) as caught:
        SecretsPage(vmpcks)  # type: ignore[arg-type]
    assert str(caught.value) == "a secrets page holds four 32-byte VMPCKs"


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0x000, 1, "secrets page: unsupported VERSION 1"),
        (0x000, 4, "secrets page: unsupported VERSION 4"),
        (0x004, 2, "secrets page: reserved bits 31:1 at 0x004 are not zero"),
        (0x007, 0x80, "secrets page: reserved bits 31:1 at 0x004 are not zero"),
    ],
)
def test_the_secrets_page_refuses_an_unknown_version_and_reserved_bits(
    offset: int, value: int, message: str
) -> None:
    data = bytearray(SecretsPage(KEYS).to_bytes())
    data[offset] = value
    with pytest.raises(FormatError) as caught:
        SecretsPage.from_bytes(bytes(data))
    assert str(caught.value) == message


def test_the_secrets_page_takes_versions_2_and_3() -> None:
    for version in (2, 3):
        data = SecretsPage(KEYS, version=version).to_bytes()
        assert SecretsPage.from_bytes(data).version == version
    assert SecretsPage(KEYS).version == 3


# -- the CPUID page ------------------------------------------------------------------------------


def test_each_field_of_a_cpuid_function_is_at_its_offset() -> None:
    function = CpuidFunction(
        0x8000_001F, 0x11, 0x0102_0304_0506_0708, 0x1112_1314_1516_1718,
        0xA1A2_A3A4, 0xB1B2_B3B4, 0xC1C2_C3C4, 0xD1D2_D3D4,
    )
    data = CpuidPage((function,)).to_bytes()
    assert data[:16] == bytes([1]) + bytes(15)
    entry = data[16:64]
    assert entry == (
        (0x8000_001F).to_bytes(4, "little") + (0x11).to_bytes(4, "little")
        + (0x0102_0304_0506_0708).to_bytes(8, "little")
        + (0x1112_1314_1516_1718).to_bytes(8, "little")
        + (0xA1A2_A3A4).to_bytes(4, "little") + (0xB1B2_B3B4).to_bytes(4, "little")
        + (0xC1C2_C3C4).to_bytes(4, "little") + (0xD1D2_D3D4).to_bytes(4, "little")
        + bytes(8)
    )
    assert not any(data[64:])
    parsed = CpuidPage.from_bytes(data)
    assert parsed.functions == (function,)
    assert parsed.functions[0].registers == (0xA1A2_A3A4, 0xB1B2_B3B4, 0xC1C2_C3C4, 0xD1D2_D3D4)


@pytest.mark.parametrize("name", ["eax_in", "ecx_in", "eax", "ebx", "ecx", "edx"])
def test_a_cpuid_function_s_32_bit_fields_are_checked(name: str) -> None:
    for value in (-1, 1 << 32):
        with pytest.raises(UsageError) as caught:
            CpuidFunction(**{"eax_in": 0, name: value})
        assert str(caught.value) == f"CPUID function {name} is a u32"
    assert getattr(CpuidFunction(**{"eax_in": 0, name: (1 << 32) - 1}), name) == (1 << 32) - 1


@pytest.mark.parametrize("name", ["xcr0_in", "xss_in"])
def test_a_cpuid_function_s_64_bit_fields_are_checked(name: str) -> None:
    for value in (-1, 1 << 64):
        with pytest.raises(UsageError) as caught:
            CpuidFunction(0, **{name: value})
        assert str(caught.value) == "CPUID function XCR0_IN/XSS_IN are u64 values"
    assert getattr(CpuidFunction(0, **{name: (1 << 64) - 1}), name) == (1 << 64) - 1


def test_lookup_matches_the_leaf_and_the_subleaf() -> None:
    page = CpuidPage(
        (
            CpuidFunction(7, 0, eax=1),
            CpuidFunction(7, 1, eax=2),
            CpuidFunction(0xD, 1, eax=3),
            CpuidFunction(7, 1, eax=4),
        )
    )
    assert page.lookup(7) == CpuidFunction(7, 0, eax=1)
    assert page.lookup(7, 1) == CpuidFunction(7, 1, eax=2)  # the first match
    assert page.lookup(0xD, 1) == CpuidFunction(0xD, 1, eax=3)
    assert page.lookup(0xD) is None and page.lookup(1, 7) is None


def test_a_cpuid_page_holds_at_most_64_functions() -> None:
    full = CpuidPage(tuple(CpuidFunction(i) for i in range(CPUID_COUNT_MAX)))
    data = full.to_bytes()
    assert len(data) == 0x1000 and CpuidPage.from_bytes(data) == full
    assert not any(data[16 + 64 * 48 :])
    with pytest.raises(UsageError) as caught:
        CpuidPage(tuple(CpuidFunction(i) for i in range(CPUID_COUNT_MAX + 1)))
    assert str(caught.value) == "a CPUID page holds at most 64 functions"
    too_many = bytearray(data)
    too_many[0] = 65
    with pytest.raises(FormatError) as caught:
        CpuidPage.from_bytes(bytes(too_many))
    assert str(caught.value) == "SNP CPUID page: COUNT 65 exceeds 64"


def test_a_cpuid_page_is_4096_bytes_and_zero_after_its_last_function() -> None:
    data = CpuidPage((CpuidFunction(1, eax=5), CpuidFunction(2))).to_bytes()
    for size in (0xFFF, 0x1001):
        with pytest.raises(FormatError) as caught:
            CpuidPage.from_bytes(data.ljust(0x1001, b"\0")[:size])
        assert str(caught.value) == f"SNP CPUID page: expected 4096 bytes, got {size}"
    for offset in (16 + 2 * 48, 0xFFF):
        dirty = bytearray(data)
        dirty[offset] = 1
        with pytest.raises(FormatError) as caught:
            CpuidPage.from_bytes(bytes(dirty))
        assert str(caught.value) == "SNP CPUID page: bytes after the last function are not zero"
    reserved = bytearray(data)
    reserved[16 + 0x28] = 1  # the reserved quadword of the first function
    with pytest.raises(FormatError):
        CpuidPage.from_bytes(bytes(reserved))
    header = bytearray(data)
    header[4] = 1  # the reserved header bytes
    with pytest.raises(FormatError):
        CpuidPage.from_bytes(bytes(header))
    assert CpuidPage.from_bytes(bytes(0x1000)) == CpuidPage(())
