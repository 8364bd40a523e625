"""The SNP secrets page (56860 Table 71) and the CPUID page (Table 14)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.cpuid_page import CpuidFunction, CpuidPage
from cvm.formats.snp.secrets_page import SecretsPage

key = st.binary(min_size=32, max_size=32)
u32 = st.integers(0, (1 << 32) - 1)
u64 = st.integers(0, (1 << 64) - 1)
secrets = st.builds(
    SecretsPage,
    vmpcks=st.tuples(key, key, key, key),
    fms=u32,
    version=st.sampled_from([2, 3]),
    imien=st.booleans(),
    gosvw=st.binary(min_size=16, max_size=16),
    guest_os_area=st.binary(min_size=0x60, max_size=0x60),
    svsm_base=u64,
    svsm_caa=u64,
    svsm_guest_vmpl=st.integers(0, 3),
    tsc_factor=u32,
)
functions = st.builds(
    CpuidFunction,
    eax_in=u32,
    ecx_in=u32,
    xcr0_in=u64,
    xss_in=u64,
    eax=u32,
    ebx=u32,
    ecx=u32,
    edx=u32,
)


@given(secrets)
def test_secrets_round_trip(page: SecretsPage) -> None:
    data = page.to_bytes()
    assert len(data) == 0x1000
    assert SecretsPage.from_bytes(data) == page
    for i in range(4):
        assert data[0x20 + 32 * i : 0x40 + 32 * i] == page.vmpck(i)


@pytest.mark.parametrize(
    ("offset", "value"), [(0, 1), (4, 2), (0xC, 1), (0x15D, 1), (0x164, 1), (0xFFF, 1)]
)
def test_secrets_strict(offset: int, value: int) -> None:
    data = bytearray(SecretsPage((bytes(32),) * 4).to_bytes())
    data[offset] = value
    with pytest.raises(FormatError):
        SecretsPage.from_bytes(bytes(data))


def test_secrets_vmpck_index() -> None:
    with pytest.raises(UsageError):
        SecretsPage((bytes(32),) * 4).vmpck(4)


@given(st.lists(functions, max_size=64))
def test_cpuid_round_trip(items: list[CpuidFunction]) -> None:
    page = CpuidPage(tuple(items))
    data = page.to_bytes()
    assert len(data) == 0x1000
    assert int.from_bytes(data[:4], "little") == len(items)
    assert CpuidPage.from_bytes(data) == page


def test_cpuid_layout_and_strictness() -> None:
    page = CpuidPage((CpuidFunction(0x8000001F, 0, eax=0x1B, ebx=0x33),))
    data = bytearray(page.to_bytes())
    assert int.from_bytes(data[0x10:0x14], "little") == 0x8000001F
    assert int.from_bytes(data[0x28:0x2C], "little") == 0x1B
    assert page.lookup(0x8000001F) == page.functions[0]
    assert page.lookup(1) is None
    data[0x40] = 1  # past the last function
    with pytest.raises(FormatError):
        CpuidPage.from_bytes(bytes(data))
    data[0x40] = 0
    data[0] = 65
    with pytest.raises(FormatError):
        CpuidPage.from_bytes(bytes(data))
