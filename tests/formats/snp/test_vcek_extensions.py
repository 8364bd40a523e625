"""AMD VCEK extensions (57230 Table 9): real Milan and Turin certificates byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.crypto.x509_chain import parse_certificate
from cvm.errors import FormatError
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion
from cvm.formats.snp.vcek_extensions import (
    OID_HW_ID,
    OID_UCODE_SPL,
    VcekExtensions,
    decode_integer,
    encode_integer,
)


@pytest.mark.parametrize(
    ("name", "product", "layout"),
    [
        ("vcek_milan.der", "Milan-B0", TcbLayout.MILAN_GENOA),
        ("vcek_turin.der", "Turin", TcbLayout.TURIN),
    ],
)
def test_real_vcek_extensions_decode_and_reencode(
    vectors: Path, name: str, product: str, layout: TcbLayout
) -> None:
    cert = parse_certificate((vectors / "snp/virtee-sev/tests/certs_data" / name).read_bytes())
    claims = VcekExtensions.from_extensions(cert.extension_values())
    assert claims.product_name == product and claims.tcb.layout is layout
    assert claims.to_extensions() == list(cert.extension_values().items())


def test_milan_known_values(vectors: Path) -> None:
    der = (vectors / "snp/go-sev-guest/verify/testdata/vcek.testcer").read_bytes()
    claims = VcekExtensions.from_extensions(parse_certificate(der).extension_values())
    assert claims.tcb == TcbVersion(boot_loader=2, tee=0, snp=5, microcode=68)
    assert claims.hw_id.hex().startswith("3ac3fe21")


def test_integer_encoding_matches_amd() -> None:
    assert encode_integer(0x44) == bytes.fromhex("020144")
    assert encode_integer(0x80) == bytes.fromhex("02020080")
    assert decode_integer(bytes.fromhex("02020080"), "x") == 0x80
    for bad in ("020180", "0202007f", "0401aa", "02"):
        with pytest.raises(FormatError):
            decode_integer(bytes.fromhex(bad), "x")


def test_missing_or_wrong_extensions_are_refused() -> None:
    claims = VcekExtensions("Milan-B0", TcbVersion(1, 2, 3, 4), bytes(range(64)))
    values = dict(claims.to_extensions())
    del values[OID_UCODE_SPL]
    with pytest.raises(FormatError):
        VcekExtensions.from_extensions(values)
    values = dict(claims.to_extensions())
    values[OID_HW_ID] = bytes(8)
    with pytest.raises(FormatError):
        VcekExtensions.from_extensions(values)


@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.sampled_from(list(TcbLayout)),
    st.binary(min_size=64, max_size=64),
)
def test_round_trip(
    bl: int, tee: int, snp: int, uc: int, fmc: int, layout: TcbLayout, chip: bytes
) -> None:
    tcb = TcbVersion(bl, tee, snp, uc, fmc if layout is TcbLayout.TURIN else 0, layout)
    hw_id = chip[:8] if layout is TcbLayout.TURIN else chip
    claims = VcekExtensions("Turin" if layout else "Genoa-B0", tcb, hw_id)
    assert VcekExtensions.from_extensions(dict(claims.to_extensions())) == claims
