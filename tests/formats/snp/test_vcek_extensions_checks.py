"""The VCEK's AMD extensions (57230): every refusal, and the field its message names."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion
from cvm.formats.snp.vcek_extensions import (
    AMD_ARC,
    OID_CSP_ID,
    OID_FMC_SPL,
    OID_HW_ID,
    OID_PRODUCT_NAME,
    OID_SNP_SPL,
    OID_STRUCT_VERSION,
    VcekExtensions,
    decode_ia5,
    decode_integer,
    encode_ia5,
    encode_integer,
)

MILAN = VcekExtensions("Milan-B0", TcbVersion(2, 0, 5, 68), bytes(range(64)))
TURIN = VcekExtensions(
    "Turin", TcbVersion(2, 3, 4, 9, fmc=1, layout=TcbLayout.TURIN), bytes(range(8))
)
RESERVED_SPL_5 = f"{AMD_ARC}.3.5"


def _refused(extensions: dict[str, bytes]) -> str:
    with pytest.raises(FormatError) as caught:
        VcekExtensions.from_extensions(extensions)
    return str(caught.value)


def test_integer_encoding_limits() -> None:
    """Two content bytes at most: 0x7FFF is the largest, 0x8000 would need three."""
    assert encode_integer(0) == bytes.fromhex("020100")
    assert encode_integer(0x7FFF) == bytes.fromhex("02027fff")
    assert encode_integer(0x100) == bytes.fromhex("02020100")
    for value in (-1, 0x8000, 0x10000):
        with pytest.raises(UsageError) as caught:
            encode_integer(value)
        assert str(caught.value) == f"SPL value {value} out of range"


def test_integer_decoding_takes_only_short_minimal_non_negative_integers() -> None:
    assert decode_integer(bytes.fromhex("02027fff"), "x") == 0x7FFF
    assert decode_integer(bytes.fromhex("02020100"), "x") == 0x100
    for bad in ("0203010000", "0301aa", "020205", "02010505", "0200", ""):
        with pytest.raises(FormatError) as caught:
            decode_integer(bytes.fromhex(bad), "blSPL")
        assert str(caught.value) == f"VCEK extension blSPL: not a small DER INTEGER ({bad})"
    for bad in ("0201ff", "02020001"):
        with pytest.raises(FormatError) as caught:
            decode_integer(bytes.fromhex(bad), "snpSPL")
        assert str(caught.value) == "VCEK extension snpSPL: INTEGER is negative or not minimal"


def test_ia5_strings_use_the_short_length_form() -> None:
    assert encode_ia5("x" * 0x7F)[:2] == bytes([0x16, 0x7F])
    with pytest.raises(UsageError, match=r"^product name too long$"):
        encode_ia5("x" * 0x80)
    assert decode_ia5(b"\x16\x00", "productName") == ""
    assert decode_ia5(b"\x16\x05Milan", "productName") == "Milan"
    for bad in (b"", b"\x16", b"\x0c\x05Milan", b"\x16\x04Milan", b"\x16\x06Milan"):
        with pytest.raises(FormatError) as caught:
            decode_ia5(bad, "productName")
        assert str(caught.value) == "VCEK extension productName: not a short DER IA5String"
    with pytest.raises(FormatError) as caught:
        decode_ia5(b"\x16\x02\xc3\xa9", "productName")
    assert str(caught.value) == "VCEK extension productName: not ASCII"


def test_a_wrong_hw_id_size_is_refused_when_building() -> None:
    with pytest.raises(UsageError, match=r"^hwID must be 64 bytes$"):
        VcekExtensions("Milan-B0", TcbVersion(), bytes(8)).to_extensions()
    with pytest.raises(UsageError, match=r"^hwID must be 8 bytes$"):
        VcekExtensions("Turin", TcbVersion(layout=TcbLayout.TURIN), bytes(64)).to_extensions()


def test_the_struct_version_is_the_layout() -> None:
    assert dict(MILAN.to_extensions())[OID_STRUCT_VERSION] == bytes.fromhex("020100")
    assert dict(TURIN.to_extensions())[OID_STRUCT_VERSION] == bytes.fromhex("020101")


def test_struct_version_refusals_name_the_field() -> None:
    values = dict(MILAN.to_extensions())
    del values[OID_STRUCT_VERSION]
    assert _refused(values) == "VCEK: no structVersion extension"
    values[OID_STRUCT_VERSION] = bytes.fromhex("020102")
    assert _refused(values) == "VCEK: unknown structVersion 2"
    values[OID_STRUCT_VERSION] = bytes.fromhex("0101ff")
    assert _refused(values) == "VCEK extension structVersion: not a small DER INTEGER (0101ff)"


def test_unexpected_and_missing_amd_extensions_are_listed() -> None:
    # fmcSPL belongs to structVersion 1 only.
    values = {**dict(MILAN.to_extensions()), OID_FMC_SPL: encode_integer(1)}
    assert _refused(values) == f"VCEK: unexpected AMD extensions ['{OID_FMC_SPL}']"
    # The VLEK's cspId is the one extra AMD extension a VCEK-shaped certificate may carry.
    with_csp = {**dict(MILAN.to_extensions()), OID_CSP_ID: encode_ia5("csp")}
    assert VcekExtensions.from_extensions(with_csp) == MILAN
    values = dict(TURIN.to_extensions())
    del values[OID_HW_ID], values[OID_SNP_SPL]
    assert _refused(values) == f"VCEK: missing AMD extensions {sorted([OID_HW_ID, OID_SNP_SPL])}"
    # Extensions outside AMD's arc are not AMD's business.
    assert VcekExtensions.from_extensions(
        {**dict(MILAN.to_extensions()), "2.5.29.15": b"\x03\x02\x01\x06"}
    ) == MILAN


def test_field_refusals_name_the_field() -> None:
    values = {**dict(MILAN.to_extensions()), RESERVED_SPL_5: encode_integer(1)}
    assert _refused(values) == f"VCEK: reserved SPL {RESERVED_SPL_5} is not zero"
    values = {**dict(MILAN.to_extensions()), RESERVED_SPL_5: bytes.fromhex("0201ff")}
    assert _refused(values) == (
        f"VCEK extension {RESERVED_SPL_5}: INTEGER is negative or not minimal"
    )
    values = {**dict(MILAN.to_extensions()), OID_SNP_SPL: bytes.fromhex("0201ff")}
    assert _refused(values) == "VCEK extension snp: INTEGER is negative or not minimal"
    values = {**dict(MILAN.to_extensions()), OID_SNP_SPL: encode_integer(256)}
    assert _refused(values) == "VCEK: TCB_VERSION.snp: 256 is not a byte value"
    values = {**dict(TURIN.to_extensions()), OID_HW_ID: bytes(64)}
    assert _refused(values) == "VCEK: hwID is 64 bytes, expected 8"
    values = {**dict(MILAN.to_extensions()), OID_PRODUCT_NAME: b"\x0c\x08Milan-B0"}
    assert _refused(values) == "VCEK extension productName: not a short DER IA5String"
