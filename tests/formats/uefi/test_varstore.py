"""The OVMF NV varstore: Debian's real files, a blank store byte-identical to OVMF_VARS_4M.fd."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.uefi.efi_time import EfiTime
from cvm.formats.uefi.guids import EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE
from cvm.formats.uefi.signature_list import SignatureDatabase
from cvm.formats.uefi.variable import EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.wire import Guid

OVMF = Path("/usr/share/OVMF")


def _ovmf(name: str) -> bytes:
    path = OVMF / name
    if not path.exists():
        pytest.skip(f"{path} is not installed (package ovmf)")
    return path.read_bytes()


def test_debian_ms_varstore_lists_the_secure_boot_keys(vectors: Path) -> None:
    store = Varstore.parse(_ovmf("OVMF_VARS_4M.ms.fd"))
    assert store.to_bytes() == _ovmf("OVMF_VARS_4M.ms.fd")
    pk = store.get("PK", EFI_GLOBAL_VARIABLE)
    kek = store.get("KEK", EFI_GLOBAL_VARIABLE)
    db = store.get("db", EFI_IMAGE_SECURITY_DATABASE)
    dbx = store.get("dbx", EFI_IMAGE_SECURITY_DATABASE)
    assert pk and kek and db and dbx
    assert {v.attributes for v in (pk, kek, db, dbx)} == {0x27}
    certs = SignatureDatabase.parse(db.data).certificates()
    secureboot = vectors / "secureboot"
    assert [c.data for c in certs] == [
        (secureboot / "ms-windows-production-pca-2011.der").read_bytes(),
        (secureboot / "ms-uefi-ca-2011.der").read_bytes(),
    ]
    assert SignatureDatabase.parse(pk.data).certificates()[0].data == (
        secureboot / "debian-ovmf-pk-kek.der").read_bytes()
    assert len(SignatureDatabase.parse(dbx.data).sha256_hashes()) == 1
    assert any(not r.live for r in store.records)
    assert store.get("SecureBootEnable") is not None


def test_blank_store_equals_ovmf_vars_4m() -> None:
    assert Varstore.empty_4m().to_bytes() == _ovmf("OVMF_VARS_4M.fd")
    assert Varstore.parse(_ovmf("OVMF_VARS_4M.fd")).variables == ()


def test_rewriting_keeps_variables_and_the_ftw_area() -> None:
    original = _ovmf("OVMF_VARS_4M.ms.fd")
    store = Varstore.parse(original)
    again = store.with_variables(store.variables)
    assert again.variables == store.variables
    assert again.to_bytes()[0x40000:] == original[0x40000:]
    assert again.to_bytes()[:0x64] == original[:0x64]


variables = st.builds(
    EfiVariable,
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789", min_size=1, max_size=16),
    st.uuids().map(Guid), st.integers(0, 0x7F), st.binary(max_size=200),
    st.builds(EfiTime, st.integers(1990, 2100), st.integers(1, 12), st.integers(1, 28)),
    st.integers(0, 2**64 - 1),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(variables, max_size=6))
def test_varstore_round_trip(items: list[EfiVariable]) -> None:
    store = Varstore.empty_4m().with_variables(items)
    assert Varstore.parse(store.to_bytes()).variables == tuple(items)


def test_overfull_store_is_refused() -> None:
    big = EfiVariable("big", EFI_GLOBAL_VARIABLE, 7, bytes(0x40000))
    with pytest.raises(UsageError):
        Varstore.empty_4m().set(big)


@pytest.mark.parametrize("offset", [0x10, 0x28, 0x30, 0x32, 0x48, 0x5A, 0x5C, 0x5D])
def test_corrupt_headers_are_format_errors(offset: int) -> None:
    data = bytearray(Varstore.empty_4m().to_bytes())
    data[offset] ^= 0x5A
    with pytest.raises(FormatError):
        Varstore.parse(bytes(data))


@settings(max_examples=100, deadline=None)
@given(st.integers(0x64, 0x200), st.binary(min_size=1, max_size=8))
def test_corrupt_records_only_raise_format_errors(offset: int, patch: bytes) -> None:
    store = Varstore.empty_4m().set(EfiVariable("x", EFI_GLOBAL_VARIABLE, 7, b"payload" * 20))
    data = bytearray(store.to_bytes())
    data[offset : offset + len(patch)] = patch
    with contextlib.suppress(FormatError):
        Varstore.parse(bytes(data))
