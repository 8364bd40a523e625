"""EFI_SIGNATURE_LIST's checks one by one: the sizes a list declares, the fixed size of hash
types, the header bytes, the owner, each refusal's class and message, and the bytes written."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.uefi.guids import (
    EFI_CERT_RSA2048,
    EFI_CERT_RSA2048_SHA1,
    EFI_CERT_RSA2048_SHA256,
    EFI_CERT_SHA1,
    EFI_CERT_SHA224,
    EFI_CERT_SHA256,
    EFI_CERT_SHA384,
    EFI_CERT_SHA512,
    EFI_CERT_X509,
    EFI_CERT_X509_SHA256,
    EFI_CERT_X509_SHA384,
    EFI_CERT_X509_SHA512,
    MICROSOFT_OWNER,
    SHIM_LOCK_GUID,
)
from cvm.formats.uefi.signature_list import (
    SignatureData,
    SignatureDatabase,
    SignatureList,
    check_enrolled_lists,
)
from cvm.wire import Guid

OWNER_A = Guid.parse("5d3c2b1a-0000-4000-8000-00000000000a")
OTHER_TYPE = Guid.parse("01234567-89ab-cdef-0123-456789abcdef")


def _list(kind: Guid, list_size: int, header_size: int, size: int, tail: bytes) -> bytes:
    return (kind.to_bytes() + list_size.to_bytes(4, "little") + header_size.to_bytes(4, "little")
            + size.to_bytes(4, "little") + tail)


def _refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        SignatureDatabase.parse(data)
    assert str(caught.value) == message


# --- EFI_SIGNATURE_DATA ---------------------------------------------------------------------

def test_signature_data_needs_its_owner() -> None:
    with pytest.raises(FormatError) as caught:
        SignatureData.from_bytes(bytes(15))
    assert str(caught.value) == "EFI_SIGNATURE_DATA: 15 bytes, the owner needs 16"
    assert SignatureData.from_bytes(SHIM_LOCK_GUID.to_bytes()) == SignatureData(SHIM_LOCK_GUID, b"")
    entry = SignatureData.from_bytes(MICROSOFT_OWNER.to_bytes() + b"hash")
    assert entry == SignatureData(MICROSOFT_OWNER, b"hash")
    assert entry.to_bytes() == MICROSOFT_OWNER.to_bytes() + b"hash"


# --- building a list ------------------------------------------------------------------------

def test_signatures_of_one_list_have_one_size() -> None:
    with pytest.raises(UsageError) as caught:
        SignatureList.of(EFI_CERT_X509, SHIM_LOCK_GUID, b"a", b"bb")
    assert str(caught.value) == "EFI_SIGNATURE_LIST: all signatures of a list must have one size"
    assert SignatureList.of(EFI_CERT_X509, SHIM_LOCK_GUID, b"ab", b"cd").signature_size == 18


def test_a_declared_size_must_be_the_entries_size() -> None:
    entries = (SignatureData(SHIM_LOCK_GUID, b"abc"),)
    with pytest.raises(UsageError) as caught:
        SignatureList(EFI_CERT_X509, entries, b"", 20)
    assert str(caught.value) == (
        "EFI_SIGNATURE_LIST: SignatureSize 20 differs from the entries' size 19")
    assert SignatureList(EFI_CERT_X509, entries, b"", 19).signature_size == 19
    assert SignatureList(EFI_CERT_X509, entries).signature_size == 19
    # Without entries the declared size stays.
    assert SignatureList(EFI_CERT_X509, (), b"", 123).signature_size == 123


@pytest.mark.parametrize(("kind", "name", "size"), [
    (EFI_CERT_SHA1, "EFI_CERT_SHA1", 20), (EFI_CERT_SHA256, "EFI_CERT_SHA256", 32),
    (EFI_CERT_SHA384, "EFI_CERT_SHA384", 48), (EFI_CERT_SHA512, "EFI_CERT_SHA512", 64),
    (EFI_CERT_RSA2048, "EFI_CERT_RSA2048", 256),
    (EFI_CERT_X509_SHA256, "EFI_CERT_X509_SHA256", 48),
    (EFI_CERT_X509_SHA384, "EFI_CERT_X509_SHA384", 64),
    (EFI_CERT_X509_SHA512, "EFI_CERT_X509_SHA512", 80),
])
def test_fixed_size_types_take_their_size_only(kind: Guid, name: str, size: int) -> None:
    assert SignatureList.of(kind, SHIM_LOCK_GUID, bytes(size)).signature_size == 16 + size
    for wrong in (size - 1, size + 1):
        with pytest.raises(FormatError) as caught:
            SignatureList.of(kind, SHIM_LOCK_GUID, bytes(wrong))
        assert str(caught.value) == (
            f"EFI_SIGNATURE_LIST of {name}: SignatureSize {16 + wrong}, expected {16 + size}")
    # An empty list of a fixed-size type may declare 0 or the right size, nothing else.
    assert SignatureList(kind, (), b"", 0).signature_size == 0
    assert SignatureList(kind, (), b"", 16 + size).signature_size == 16 + size
    with pytest.raises(FormatError):
        SignatureList(kind, (), b"", 16 + size + 1)
    # The same sizes parsed from bytes.
    raw = _list(kind, 28 + 16 + size + 1, 0, 16 + size + 1, bytes(16 + size + 1))
    with pytest.raises(FormatError) as caught:
        SignatureDatabase.parse(raw)
    assert str(caught.value) == (
        f"EFI_SIGNATURE_LIST of {name}: SignatureSize {17 + size}, expected {16 + size}")


def test_the_type_name() -> None:
    assert SignatureList.of(EFI_CERT_X509, SHIM_LOCK_GUID, b"x").type_name == "EFI_CERT_X509"
    assert SignatureList(OTHER_TYPE, ()).type_name == "01234567-89ab-cdef-0123-456789abcdef"


# --- parsing --------------------------------------------------------------------------------

def test_a_truncated_header_names_its_offset() -> None:
    first = SignatureList.of(EFI_CERT_SHA256, SHIM_LOCK_GUID, bytes(32)).to_bytes()
    _refused(first + bytes(27), "EFI_SIGNATURE_LIST at 0x4c: truncated header")
    _refused(bytes(1), "EFI_SIGNATURE_LIST at 0x0: truncated header")


def test_a_list_size_past_the_data_is_refused() -> None:
    raw = _list(EFI_CERT_SHA256, 28 + 48 + 1, 0, 48, SHIM_LOCK_GUID.to_bytes() + bytes(32))
    _refused(raw, "EFI_SIGNATURE_LIST at 0x0: SignatureListSize 0x4d does not fit the 0x4c "
                  "bytes left")
    # The same at the second list: the bytes left are counted from that list.
    first = SignatureList.of(EFI_CERT_X509, SHIM_LOCK_GUID, b"c").to_bytes()
    _refused(first + raw, "EFI_SIGNATURE_LIST at 0x2d: SignatureListSize 0x4d does not fit "
                          "the 0x4c bytes left")


@pytest.mark.parametrize(("list_size", "header_size"), [(0, 0), (27, 0), (28, 1), (30, 3)])
def test_a_list_size_smaller_than_its_headers_is_refused(list_size: int, header_size: int) -> None:
    raw = _list(EFI_CERT_X509, list_size, header_size, 0, bytes(8))
    _refused(raw, f"EFI_SIGNATURE_LIST at 0x0: SignatureListSize {list_size:#x} does not fit "
                  f"the {len(raw):#x} bytes left")


def test_the_list_may_end_exactly_at_the_data_end() -> None:
    raw = _list(EFI_CERT_X509, 28 + 3, 3, 0, b"HDR")
    (item,) = SignatureDatabase.parse(raw).lists
    assert item.signature_header == b"HDR" and item.signatures == ()
    assert item.to_bytes() == raw


@pytest.mark.parametrize(("size", "body"), [(0, 16), (15, 15), (1, 1), (17, 20), (20, 30)])
def test_signatures_must_fill_the_body_in_whole_entries(size: int, body: int) -> None:
    raw = _list(EFI_CERT_X509, 28 + body, 0, size, bytes(body))
    _refused(raw, f"EFI_SIGNATURE_LIST at 0x0: {body} bytes of signatures are not a multiple "
                  f"of SignatureSize {size}")


def test_each_entry_has_its_owner_and_the_header_is_skipped() -> None:
    entries = SHIM_LOCK_GUID.to_bytes() + b"ab" + MICROSOFT_OWNER.to_bytes() + b"cd"
    raw = _list(EFI_CERT_X509, 28 + 4 + 36, 4, 18, b"HEAD" + entries)
    (item,) = SignatureDatabase.parse(raw).lists
    assert item == SignatureList(EFI_CERT_X509, (SignatureData(SHIM_LOCK_GUID, b"ab"),
                                                 SignatureData(MICROSOFT_OWNER, b"cd")),
                                 b"HEAD", 18)
    assert item.to_bytes() == raw
    assert SignatureList.parse_one(b"pad" + raw, 3) == (item, 3 + len(raw))


def test_a_list_of_exactly_one_entry() -> None:
    raw = _list(EFI_CERT_X509, 28 + 16, 0, 16, SHIM_LOCK_GUID.to_bytes())
    assert SignatureList.from_bytes(raw).signatures == (SignatureData(SHIM_LOCK_GUID, b""),)


def test_from_bytes_wants_one_list_and_nothing_else() -> None:
    raw = SignatureList.of(EFI_CERT_X509, SHIM_LOCK_GUID, b"cert").to_bytes()
    with pytest.raises(FormatError) as caught:
        SignatureList.from_bytes(raw + b"xyz")
    assert str(caught.value) == "EFI_SIGNATURE_LIST: 3 trailing bytes"
    assert SignatureList.from_bytes(bytearray(raw)).to_bytes() == raw


def test_the_written_list_is_byte_exact() -> None:
    item = SignatureList(EFI_CERT_X509, (SignatureData(SHIM_LOCK_GUID, b"der"),), b"hh")
    assert item.to_bytes() == _list(EFI_CERT_X509, 28 + 2 + 19, 2, 19,
                                    b"hh" + SHIM_LOCK_GUID.to_bytes() + b"der")


# --- a database -----------------------------------------------------------------------------

def test_a_database_in_order() -> None:
    certs = SignatureList.of(EFI_CERT_X509, MICROSOFT_OWNER, b"cert")
    hashes = SignatureList.of(EFI_CERT_SHA256, SHIM_LOCK_GUID, b"\x01" * 32, b"\x02" * 32)
    more = SignatureList.of(EFI_CERT_X509, SHIM_LOCK_GUID, b"other")
    database = SignatureDatabase((certs,)) + SignatureDatabase((hashes, more))
    assert database.lists == (certs, hashes, more)
    assert SignatureDatabase.parse(bytearray(database.to_bytes())) == database
    assert list(database.entries()) == [
        (EFI_CERT_X509, certs.signatures[0]), (EFI_CERT_SHA256, hashes.signatures[0]),
        (EFI_CERT_SHA256, hashes.signatures[1]), (EFI_CERT_X509, more.signatures[0])]
    assert database.certificates() == (certs.signatures[0], more.signatures[0])
    assert database.sha256_hashes() == hashes.signatures
    assert database.of_type(EFI_CERT_SHA1) == ()
    assert len(database) == 4
    assert SignatureDatabase.parse(b"") == SignatureDatabase() and len(SignatureDatabase()) == 0


# --- what the firmware enrols without authentication (edk2 CheckSignatureListFormat) --------

def _enrolled_refused(database: SignatureDatabase, name: str, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        check_enrolled_lists(database, name)
    assert str(caught.value) == message


def test_the_types_the_firmware_enrols() -> None:
    sizes = {EFI_CERT_SHA256: 32, EFI_CERT_RSA2048: 256, EFI_CERT_RSA2048_SHA256: 256,
             EFI_CERT_SHA1: 20, EFI_CERT_RSA2048_SHA1: 256, EFI_CERT_SHA224: 28,
             EFI_CERT_SHA384: 48, EFI_CERT_SHA512: 64, EFI_CERT_X509_SHA256: 48,
             EFI_CERT_X509_SHA384: 64, EFI_CERT_X509_SHA512: 80}
    lists = [SignatureList.of(kind, OWNER_A, bytes(size)) for kind, size in sizes.items()]
    lists.append(SignatureList.of(EFI_CERT_X509, OWNER_A, b"any certificate bytes"))
    check_enrolled_lists(SignatureDatabase(tuple(lists)), "db")
    assert str(EFI_CERT_SHA224) == "0b6e5233-a65c-44c9-9407-d9ab83bfc8bd"
    assert str(EFI_CERT_RSA2048_SHA256) == "e2b36190-879b-4a3d-ad8d-f2e7bba32784"
    assert str(EFI_CERT_RSA2048_SHA1) == "67f8444f-8743-48f1-a328-1eaab8736080"
    # An empty fixed-size list that declares its size passes, as in edk2.
    check_enrolled_lists(SignatureDatabase((SignatureList(EFI_CERT_SHA256, (), b"", 48),)), "dbx")
    check_enrolled_lists(SignatureDatabase(), "PK")


def test_an_unknown_type_is_not_enrolled() -> None:
    database = SignatureDatabase((SignatureList.of(EFI_CERT_X509, OWNER_A, b"c"),
                                  SignatureList.of(OTHER_TYPE, OWNER_A, b"x")))
    _enrolled_refused(database, "KEK", "KEK: EFI_SIGNATURE_LIST 1 "
                      "(01234567-89ab-cdef-0123-456789abcdef): a signature type the firmware "
                      "does not take")


def test_a_signature_header_is_not_enrolled() -> None:
    database = SignatureDatabase((SignatureList(EFI_CERT_X509, (SignatureData(OWNER_A, b"c"),),
                                                b"\0"),))
    _enrolled_refused(database, "db", "db: EFI_SIGNATURE_LIST 0 (EFI_CERT_X509): "
                      "SignatureHeaderSize 1, the firmware takes 0")


def test_a_fixed_size_list_without_its_size_is_not_enrolled() -> None:
    database = SignatureDatabase((SignatureList(EFI_CERT_SHA256, (), b"", 0),))
    _enrolled_refused(database, "dbx", "dbx: EFI_SIGNATURE_LIST 0 (EFI_CERT_SHA256): "
                      "SignatureSize 0, expected 48")


def test_an_x509_list_without_a_certificate_is_not_enrolled() -> None:
    database = SignatureDatabase((SignatureList(EFI_CERT_X509, (), b"", 100),))
    _enrolled_refused(database, "db", "db: EFI_SIGNATURE_LIST 0 (EFI_CERT_X509): no certificate")


def test_a_pk_holds_one_signature() -> None:
    one = SignatureList.of(EFI_CERT_X509, OWNER_A, b"c")
    check_enrolled_lists(SignatureDatabase((one,)), "PK")
    _enrolled_refused(SignatureDatabase((one, one)), "PK",
                      "PK: 2 signatures, the firmware takes one")
    check_enrolled_lists(SignatureDatabase((one, one)), "KEK")
    _enrolled_refused(SignatureDatabase((SignatureList.of(EFI_CERT_X509, OWNER_A, b"a", b"b"),)),
                      "PK", "PK: 2 signatures, the firmware takes one")
