"""EFI_SIGNATURE_LIST / EFI_SIGNATURE_DATA: the real OVMF dbx, round trips, strictness."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.uefi.guids import EFI_CERT_X509_SHA256, MICROSOFT_OWNER
from cvm.formats.uefi.signature_list import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    SHIM_LOCK_GUID,
    SignatureData,
    SignatureDatabase,
    SignatureList,
)
from cvm.wire import Guid

guids = st.uuids().map(Guid)


def test_real_ovmf_dbx(vectors: Path) -> None:
    raw = (vectors / "secureboot" / "ovmf-4m-ms-dbx.esl").read_bytes()
    database = SignatureDatabase.parse(raw)
    assert database.to_bytes() == raw
    (entry,) = database.sha256_hashes()
    assert str(entry.owner) == "a0baa8a3-041d-48a8-bc87-c36d121b5e3d"
    assert entry.data.hex().startswith("e3b0c442")
    assert database.lists[0].type_name == "EFI_CERT_SHA256"


def test_x509_list_of_a_real_certificate(vectors: Path) -> None:
    der = (vectors / "secureboot" / "ms-uefi-ca-2011.der").read_bytes()
    esl = SignatureList.of(EFI_CERT_X509, MICROSOFT_OWNER, der)
    data = esl.to_bytes()
    assert len(data) == 28 + 16 + len(der)
    assert SignatureList.from_bytes(data) == esl
    assert SignatureDatabase.parse(data).certificates()[0] == SignatureData(MICROSOFT_OWNER, der)


def test_well_known_guids() -> None:
    assert str(SHIM_LOCK_GUID) == "605dab50-e046-4300-abb6-3dd810dd8b23"
    assert EFI_CERT_SHA256.to_bytes().hex() == "2616c4c14c509240aca941f936934328"


def test_fixed_size_types_are_checked() -> None:
    with pytest.raises(FormatError):
        SignatureList.of(EFI_CERT_SHA256, SHIM_LOCK_GUID, b"short")
    with pytest.raises(UsageError):
        SignatureList(EFI_CERT_X509, (SignatureData(SHIM_LOCK_GUID, b"a"),
                                      SignatureData(SHIM_LOCK_GUID, b"bb")))
    assert SignatureList.of(EFI_CERT_X509_SHA256, SHIM_LOCK_GUID, bytes(48)).signature_size == 64


@pytest.mark.parametrize("cut", [1, 27, 28, 43, 75])
def test_truncated_lists(cut: int) -> None:
    raw = SignatureList.of(EFI_CERT_SHA256, SHIM_LOCK_GUID, bytes(32)).to_bytes()
    with pytest.raises(FormatError):
        SignatureDatabase.parse(raw[:cut])


lists = st.one_of(
    st.builds(lambda t, o, hs: SignatureList.of(t, o, *hs), st.just(EFI_CERT_SHA256), guids,
              st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=4)),
    st.builds(lambda o, c: SignatureList.of(EFI_CERT_X509, o, c), guids,
              st.binary(min_size=1, max_size=80)),
    st.builds(lambda t, h, size: SignatureList(t, (), h, size), guids, st.binary(max_size=8),
              st.sampled_from([0, 16, 48])),
)


@given(st.lists(lists, max_size=4))
def test_database_round_trip(items: list[SignatureList]) -> None:
    database = SignatureDatabase(tuple(items))
    raw = database.to_bytes()
    assert SignatureDatabase.parse(raw) == database
    assert SignatureDatabase.parse(raw).to_bytes() == raw
    assert len(database) == sum(len(i.signatures) for i in items)


@given(st.binary(max_size=200))
def test_random_bytes_only_raise_format_errors(blob: bytes) -> None:
    with contextlib.suppress(FormatError):
        assert SignatureDatabase.parse(blob).to_bytes() == blob
