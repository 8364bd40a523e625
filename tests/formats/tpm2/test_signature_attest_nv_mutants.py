"""TPMT_SIGNATURE, TPMT_SIG_SCHEME, the tickets, TPMS_ATTEST, TPMS_NV_PUBLIC and the TPM2B
helpers: each refusal names the structure, the field and its offset (the vTPM answers its
code from the error class: TruncatedError TPM_RC_INSUFFICIENT, OversizeError TPM_RC_SIZE),
each accepted algorithm, tag and type is taken and its neighbours refused, and each size limit
is exact both ways."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, OversizeError, TruncatedError, UsageError
from cvm.formats.tpm2.attest import ClockInfo, QuoteAttest
from cvm.formats.tpm2.constants import TpmAlg, TpmNt, TpmRh, TpmSt, digest
from cvm.formats.tpm2.nv_public import NvPublic, nv_type
from cvm.formats.tpm2.pcr_selection import PcrSelection, PcrSelectionList
from cvm.formats.tpm2.signature import Signature, SigScheme, Ticket
from cvm.formats.tpm2.tpm2b import (
    TPM2B_MAX,
    parse_tpm2b,
    put_tpm2b,
    read_tpm2b,
    reader,
    tpm2b,
    writer,
)

_HASHES = (TpmAlg.SHA1, TpmAlg.SHA256, TpmAlg.SHA384, TpmAlg.SHA512)


def _short(what: str, field: str, size: int, offset: int, left: int = 0) -> str:
    return f"{what}: {field} needs {size} bytes at offset {offset:#x}, only {left} left"


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


# ---- TPM2B ----------------------------------------------------------------------------------
def test_a_tpm2b_is_its_big_endian_size_then_its_bytes() -> None:
    assert tpm2b(b"abc") == b"\x00\x03abc"
    assert tpm2b(b"") == b"\x00\x00"
    assert put_tpm2b(writer(), bytes(0x102)).to_bytes()[:2] == b"\x01\x02"
    assert parse_tpm2b(b"\x00\x03abc", "thing") == b"abc"
    source = reader(b"\x00\x02ab\x00\x01c", "pair")
    assert (read_tpm2b(source, "first"), read_tpm2b(source, "second")) == (b"ab", b"c")
    assert source.remaining == 0
    assert TPM2B_MAX == 0xFFFF


def test_a_tpm2b_over_its_maximum_is_refused_on_writing_and_reading() -> None:
    assert tpm2b(bytes(4), 4) == b"\x00\x04" + bytes(4)
    with pytest.raises(FormatError) as caught:
        tpm2b(bytes(5), 4)
    assert str(caught.value) == "TPM2B of 5 bytes exceeds the maximum 4"
    with pytest.raises(FormatError) as caught:
        put_tpm2b(writer(), bytes(0x10000))
    assert str(caught.value) == "TPM2B of 65536 bytes exceeds the maximum 65535"
    assert len(tpm2b(bytes(0xFFFF))) == 0x10001
    assert parse_tpm2b(b"\x00\x04" + bytes(4), "thing", 4) == bytes(4)
    with pytest.raises(OversizeError) as caught:
        parse_tpm2b(b"\x00\x05" + bytes(5), "thing", 4)
    assert str(caught.value) == "thing: thing.size 5 exceeds the maximum 4 (at offset 0x2)"


def test_a_complete_tpm2b_has_nothing_after_it() -> None:
    with pytest.raises(FormatError) as caught:
        parse_tpm2b(b"\x00\x01ab", "thing")
    assert str(caught.value) == "thing: 1 unexpected trailing bytes at offset 0x3"
    with pytest.raises(TruncatedError) as caught:
        parse_tpm2b(b"\x00\x03ab", "thing")
    assert str(caught.value) == _short("thing", "thing", 3, 2, 2)


# ---- TPMT_SIG_SCHEME ------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", [TpmAlg.RSASSA, TpmAlg.RSAPSS, TpmAlg.ECDSA, TpmAlg.SM2,
                                    TpmAlg.ECSCHNORR, TpmAlg.HMAC])
def test_each_signing_scheme_is_taken_with_each_hash(scheme: int) -> None:
    for hash_alg in _HASHES:
        data = _u16(scheme) + _u16(hash_alg)
        source = reader(data + b"x", "TPM2_Sign")
        assert SigScheme.read(source) == SigScheme(scheme, hash_alg)
        assert source.remaining == 1
        assert SigScheme(scheme, hash_alg).write(writer()).to_bytes() == data


def test_the_null_scheme_has_no_hash() -> None:
    source = reader(_u16(TpmAlg.NULL) + b"\x00\x0b", "TPM2_Sign")
    assert SigScheme.read(source) == SigScheme(TpmAlg.NULL, TpmAlg.NULL)
    assert source.remaining == 2  # the next field, not a hash
    assert SigScheme().write(writer()).to_bytes() == b"\x00\x10"
    assert SigScheme(TpmAlg.NULL, TpmAlg.SHA256).write(writer()).to_bytes() == b"\x00\x10"


@pytest.mark.parametrize("scheme", [TpmAlg.SHA256, TpmAlg.RSA,
                                    0x0017, 0x0019, 0x001A, 0x001D])
def test_a_scheme_that_does_not_sign_is_refused(scheme: int) -> None:
    with pytest.raises(FormatError) as caught:
        SigScheme.read(reader(_u16(scheme) + b"\x00\x0b", "TPM2_Sign"))
    assert str(caught.value) == (
        f"TPM2_Sign: signature scheme {scheme:#06x} is not supported (at offset 0x2)")


def test_a_scheme_hash_that_is_no_hash_is_refused() -> None:
    with pytest.raises(FormatError) as caught:
        SigScheme.read(reader(_u16(TpmAlg.RSASSA) + _u16(TpmAlg.NULL), "TPM2_Sign"))
    assert str(caught.value) == "TPM2_Sign: signature hash 0x0010 is not supported (at offset 0x4)"


def test_a_cut_scheme_names_its_field() -> None:
    with pytest.raises(TruncatedError) as caught:
        SigScheme.read(reader(b"\x00", "TPM2_Sign"))
    assert str(caught.value) == _short("TPM2_Sign", "inScheme.scheme", 2, 0, 1)
    with pytest.raises(TruncatedError) as caught:
        SigScheme.read(reader(_u16(TpmAlg.ECDSA), "TPM2_Sign"))
    assert str(caught.value) == _short("TPM2_Sign", "inScheme.hashAlg", 2, 2)


# ---- TPMT_SIGNATURE -------------------------------------------------------------------------
def test_a_null_signature_is_its_algorithm_alone() -> None:
    assert Signature.from_bytes(b"\x00\x10") == Signature(TpmAlg.NULL)
    assert Signature(TpmAlg.NULL, TpmAlg.SHA256, b"sig").to_bytes() == b"\x00\x10"
    with pytest.raises(FormatError) as caught:
        Signature.from_bytes(b"\x00\x10\x00\x0b")
    assert str(caught.value) == "TPMT_SIGNATURE: 2 unexpected trailing bytes at offset 0x2"


@pytest.mark.parametrize("alg", [TpmAlg.RSASSA, TpmAlg.RSAPSS])
def test_an_rsa_signature_is_its_hash_and_a_tpm2b_of_up_to_512_bytes(alg: int) -> None:
    for size in (0, 256, 512):
        data = _u16(alg) + _u16(TpmAlg.SHA256) + tpm2b(bytes(size))
        value = Signature(alg, TpmAlg.SHA256, sig=bytes(size))
        assert Signature.from_bytes(data) == value
        assert value.to_bytes() == data
    with pytest.raises(OversizeError) as caught:
        Signature.from_bytes(_u16(alg) + _u16(TpmAlg.SHA256) + tpm2b(bytes(513)))
    assert str(caught.value) == (
        "TPMT_SIGNATURE: sig.size 513 exceeds the maximum 512 (at offset 0x6)")


@pytest.mark.parametrize("alg", [TpmAlg.ECDSA, TpmAlg.SM2, TpmAlg.ECSCHNORR])
def test_an_ecc_signature_is_its_hash_r_and_s_of_up_to_128_bytes(alg: int) -> None:
    data = _u16(alg) + _u16(TpmAlg.SHA384) + tpm2b(b"r" * 128) + tpm2b(b"s" * 48)
    value = Signature(alg, TpmAlg.SHA384, r=b"r" * 128, s=b"s" * 48)
    assert Signature.from_bytes(data) == value
    assert value.to_bytes() == data
    with pytest.raises(OversizeError) as caught:
        Signature.from_bytes(_u16(alg) + _u16(TpmAlg.SHA384) + tpm2b(bytes(129)) + tpm2b(b""))
    assert str(caught.value) == (
        "TPMT_SIGNATURE: signatureR.size 129 exceeds the maximum 128 (at offset 0x6)")
    with pytest.raises(OversizeError) as caught:
        Signature.from_bytes(_u16(alg) + _u16(TpmAlg.SHA384) + tpm2b(b"") + tpm2b(bytes(129)))
    assert str(caught.value) == (
        "TPMT_SIGNATURE: signatureS.size 129 exceeds the maximum 128 (at offset 0x8)")
    with pytest.raises(TruncatedError) as caught:
        Signature.from_bytes(_u16(alg) + _u16(TpmAlg.SHA384) + tpm2b(b"r"))
    assert str(caught.value) == _short("TPMT_SIGNATURE", "signatureS.size", 2, 7)


@pytest.mark.parametrize("hash_alg", _HASHES)
def test_an_hmac_signature_is_one_digest_of_its_hash_without_a_size(hash_alg: int) -> None:
    mac = digest(hash_alg, b"m")
    data = _u16(TpmAlg.HMAC) + _u16(hash_alg) + mac
    value = Signature(TpmAlg.HMAC, hash_alg, sig=mac)
    assert Signature.from_bytes(data) == value
    assert value.to_bytes() == data
    with pytest.raises(TruncatedError) as caught:
        Signature.from_bytes(data[:-1])
    assert str(caught.value) == _short("TPMT_SIGNATURE", "digest", len(mac), 4, len(mac) - 1)


def test_a_signature_algorithm_that_does_not_sign_is_refused() -> None:
    for alg in (TpmAlg.SHA256, 0x0017, 0x0019, 0x001D):
        with pytest.raises(FormatError) as caught:
            Signature.from_bytes(_u16(alg) + _u16(TpmAlg.SHA256) + tpm2b(b"x"))
        assert str(caught.value) == (
            f"TPMT_SIGNATURE: signature algorithm {alg:#06x} is not supported (at offset 0x4)")


def test_a_signature_hash_that_is_no_hash_is_refused() -> None:
    with pytest.raises(FormatError) as caught:
        Signature.from_bytes(_u16(TpmAlg.RSASSA) + _u16(TpmAlg.NULL) + tpm2b(b"x"))
    assert str(caught.value) == (
        "TPMT_SIGNATURE: signature hash 0x0010 is not supported (at offset 0x4)")


def test_a_cut_signature_names_its_field() -> None:
    cases = [
        (b"\x00", _short("TPMT_SIGNATURE", "sigAlg", 2, 0, 1)),
        (_u16(TpmAlg.RSASSA), _short("TPMT_SIGNATURE", "hash", 2, 2)),
        (_u16(TpmAlg.RSASSA) + _u16(TpmAlg.SHA256), _short("TPMT_SIGNATURE", "sig.size", 2, 4)),
        (_u16(TpmAlg.RSASSA) + _u16(TpmAlg.SHA256) + b"\x00\x02a",
         _short("TPMT_SIGNATURE", "sig", 2, 6, 1)),
        (_u16(TpmAlg.ECDSA) + _u16(TpmAlg.SHA256), _short("TPMT_SIGNATURE", "signatureR.size",
                                                            2, 4)),
        (_u16(TpmAlg.ECDSA) + _u16(TpmAlg.SHA256) + b"\x00\x01",
         _short("TPMT_SIGNATURE", "signatureR", 1, 6)),
    ]
    for data, message in cases:
        with pytest.raises(TruncatedError) as caught:
            Signature.from_bytes(data)
        assert str(caught.value) == message


# ---- tickets --------------------------------------------------------------------------------
@pytest.mark.parametrize("tag", [TpmSt.CREATION, TpmSt.VERIFIED, TpmSt.HASHCHECK,
                                 TpmSt.AUTH_SECRET, TpmSt.AUTH_SIGNED])
def test_each_ticket_tag_is_taken(tag: int) -> None:
    data = _u16(tag) + _u32(TpmRh.OWNER) + tpm2b(bytes(64))
    ticket = Ticket(tag, TpmRh.OWNER, bytes(64))
    assert Ticket.from_bytes(data) == ticket
    assert ticket.to_bytes() == data


def test_a_null_ticket_is_its_tag_the_null_hierarchy_and_an_empty_digest() -> None:
    assert Ticket.null(TpmSt.HASHCHECK) == Ticket(TpmSt.HASHCHECK, TpmRh.NULL, b"")
    assert Ticket.null(TpmSt.HASHCHECK).to_bytes() == bytes.fromhex("8024" "40000007" "0000")


@pytest.mark.parametrize("tag", [TpmSt.ATTEST_QUOTE, 0x8020, 0x8026, TpmSt.NULL])
def test_a_tag_that_is_no_ticket_is_refused(tag: int) -> None:
    with pytest.raises(FormatError) as caught:
        Ticket.from_bytes(_u16(tag) + _u32(TpmRh.NULL) + tpm2b(b""))
    assert str(caught.value) == f"TPMT_TK: ticket tag {tag:#06x} is not a ticket (at offset 0x2)"


def test_a_ticket_digest_over_64_bytes_is_refused_and_a_cut_ticket_named() -> None:
    with pytest.raises(OversizeError) as caught:
        Ticket.from_bytes(_u16(TpmSt.VERIFIED) + _u32(TpmRh.NULL) + tpm2b(bytes(65)))
    assert str(caught.value) == (
        "TPMT_TK: ticket.digest.size 65 exceeds the maximum 64 (at offset 0x8)")
    for data, message in [
        (b"\x80", _short("TPMT_TK", "ticket.tag", 2, 0, 1)),
        (_u16(TpmSt.VERIFIED) + b"\x40", _short("TPMT_TK", "ticket.hierarchy", 4, 2, 1)),
        (_u16(TpmSt.VERIFIED) + _u32(TpmRh.NULL), _short("TPMT_TK", "ticket.digest.size", 2, 6)),
    ]:
        with pytest.raises(TruncatedError) as caught:
            Ticket.from_bytes(data)
        assert str(caught.value) == message
    with pytest.raises(FormatError) as caught:
        Ticket.from_bytes(Ticket.null(TpmSt.VERIFIED).to_bytes() + b"x")
    assert str(caught.value) == "TPMT_TK: 1 unexpected trailing bytes at offset 0x8"


# ---- TPMS_CLOCK_INFO and TPMS_ATTEST --------------------------------------------------------
def test_the_clock_info_is_its_big_endian_fields() -> None:
    data = bytes.fromhex("0102030405060708" "0a0b0c0d" "0e0f1011" "01")
    clock = ClockInfo(0x0102030405060708, 0x0A0B0C0D, 0x0E0F1011, True)
    assert ClockInfo.from_bytes(data) == clock
    assert clock.to_bytes() == data
    unsafe = ClockInfo.from_bytes(data[:-1] + b"\x00")
    assert unsafe.safe is False
    assert unsafe.to_bytes() == data[:-1] + b"\x00"


@pytest.mark.parametrize("safe", [2, 0xFF])
def test_a_safe_flag_other_than_yes_or_no_is_refused(safe: int) -> None:
    with pytest.raises(FormatError) as caught:
        ClockInfo.from_bytes(bytes(16) + bytes([safe]))
    assert str(caught.value) == "TPMS_CLOCK_INFO: safe is not a TPMI_YES_NO"


SELECTION = PcrSelectionList((PcrSelection(TpmAlg.SHA256, bytes([0x01, 0x00, 0x80])),))
QUOTE = QuoteAttest(b"\x00\x0b" + bytes(32), b"nonce", ClockInfo(5, 6, 7, True), 0x1122,
                    SELECTION, bytes(32))


def _quote_bytes(signer: bytes = QUOTE.qualified_signer, extra: bytes = b"nonce",
                 digest_value: bytes = bytes(32)) -> bytes:
    return (bytes.fromhex("ff544347" "8018") + tpm2b(signer) + tpm2b(extra)
            + ClockInfo(5, 6, 7, True).to_bytes() + (0x1122).to_bytes(8, "big")
            + SELECTION.to_bytes() + tpm2b(digest_value))


def test_a_quote_attest_is_its_fields_in_order() -> None:
    assert QUOTE.to_bytes() == _quote_bytes()
    assert QuoteAttest.from_bytes(_quote_bytes()) == QUOTE


def test_a_quote_attest_without_the_tpm_generated_magic_is_refused() -> None:
    data = _quote_bytes()
    with pytest.raises(FormatError) as caught:
        QuoteAttest.from_bytes(b"\xff\x54\x43\x48" + data[4:])
    assert str(caught.value) == (
        "TPMS_ATTEST: magic 0xff544348 is not TPM_GENERATED_VALUE (at offset 0x4)")


@pytest.mark.parametrize("kind", [TpmSt.ATTEST_CERTIFY, 0x8019, 0x8017])
def test_an_attest_of_another_type_is_refused(kind: int) -> None:
    data = _quote_bytes()
    with pytest.raises(FormatError) as caught:
        QuoteAttest.from_bytes(data[:4] + _u16(kind) + data[6:])
    assert str(caught.value) == (
        f"TPMS_ATTEST: type {kind:#06x} is not TPM_ST_ATTEST_QUOTE (at offset 0x6)")


def test_the_quote_attest_size_limits_are_exact() -> None:
    assert QuoteAttest.from_bytes(_quote_bytes(signer=bytes(66))).qualified_signer == bytes(66)
    assert QuoteAttest.from_bytes(_quote_bytes(extra=bytes(64))).extra_data == bytes(64)
    assert QuoteAttest.from_bytes(_quote_bytes(digest_value=bytes(64))).pcr_digest == bytes(64)
    with pytest.raises(OversizeError) as caught:
        QuoteAttest.from_bytes(_quote_bytes(signer=bytes(67)))
    assert str(caught.value) == (
        "TPMS_ATTEST: qualifiedSigner.size 67 exceeds the maximum 66 (at offset 0x8)")
    with pytest.raises(OversizeError) as caught:
        QuoteAttest.from_bytes(_quote_bytes(extra=bytes(65)))
    assert str(caught.value) == (
        "TPMS_ATTEST: extraData.size 65 exceeds the maximum 64 (at offset 0x2c)")
    data = _quote_bytes(digest_value=bytes(65))
    with pytest.raises(OversizeError) as caught:
        QuoteAttest.from_bytes(data)
    assert str(caught.value) == (
        f"TPMS_ATTEST: pcrDigest.size 65 exceeds the maximum 64 (at offset {len(data) - 65:#x})")


def test_a_cut_quote_attest_names_each_field() -> None:
    data = _quote_bytes()
    selection_at = 6 + 36 + 7 + 0x11 + 8
    cases = [
        (0, "magic", 4), (4, "type", 2), (6, "qualifiedSigner.size", 2),
        (8, "qualifiedSigner", 34), (42, "extraData.size", 2), (44, "extraData", 5),
        (49, "clockInfo", 0x11), (66, "firmwareVersion", 8),
        (selection_at + SELECTION_SIZE, "pcrDigest.size", 2),
        (selection_at + SELECTION_SIZE + 2, "pcrDigest", 32),
    ]
    for cut, field, size in cases:
        with pytest.raises(TruncatedError) as caught:
            QuoteAttest.from_bytes(data[:cut])
        assert str(caught.value) == _short("TPMS_ATTEST", field, size, cut)
    with pytest.raises(FormatError) as caught:
        QuoteAttest.from_bytes(data + b"\x00")
    assert str(caught.value) == (
        f"TPMS_ATTEST: 1 unexpected trailing bytes at offset {len(data):#x}")


SELECTION_SIZE = len(SELECTION.to_bytes())


# ---- TPMS_NV_PUBLIC -------------------------------------------------------------------------
NV = NvPublic(0x01500016, TpmAlg.SHA256, 0x00020002 | (TpmNt.COUNTER << 4), b"p" * 32, 8)
NV_BYTES = (_u32(0x01500016) + _u16(TpmAlg.SHA256) + _u32(0x00020012) + tpm2b(b"p" * 32)
            + _u16(8))


def test_an_nv_public_area_is_its_fields_in_order_and_its_name_the_digest_of_them() -> None:
    assert NV.to_bytes() == NV_BYTES
    assert NV.to_tpm2b() == tpm2b(NV_BYTES)
    assert NvPublic.from_tpm2b(tpm2b(NV_BYTES)) == NV
    assert NV.name() == b"\x00\x0b" + digest(TpmAlg.SHA256, NV_BYTES)
    sha1 = NvPublic(0x01000000, TpmAlg.SHA1, 0, b"", 0)
    assert sha1.name() == b"\x00\x04" + digest(TpmAlg.SHA1, sha1.to_bytes())


@pytest.mark.parametrize(("nt", "expected"), [
    (0x0, TpmNt.ORDINARY), (0x1, TpmNt.COUNTER), (0x2, TpmNt.BITS), (0x4, TpmNt.EXTEND),
])
def test_the_index_type_is_attribute_bits_4_to_7(nt: int, expected: TpmNt) -> None:
    others = 0xFFFFFF0F  # every other attribute bit set: they do not change the type
    assert nv_type(others | nt << 4) is expected
    assert nv_type(nt << 4) is expected
    value = NvPublic(0x01000001, TpmAlg.SHA256, others & 0xFFFFFF0F | nt << 4, b"", 0)
    assert value.nt is expected


@pytest.mark.parametrize("nt", [0x3, 0x5, 0x8, 0x9, 0xF])
def test_an_index_type_no_tpm_nt_names_is_refused(nt: int) -> None:
    with pytest.raises(ValueError, match=f"^{nt} is not a valid TpmNt$"):
        nv_type(nt << 4)
    with pytest.raises(FormatError) as caught:
        NvPublic(0x01000001, TpmAlg.SHA256, nt << 4, b"", 0)
    assert str(caught.value) == "TPMS_NV_PUBLIC: unknown TPM_NT in attributes"


@pytest.mark.parametrize("index", [0x00FFFFFF, 0x02000000, 0x81000000, 0x40000001])
def test_a_handle_outside_the_nv_range_is_refused(index: int) -> None:
    with pytest.raises(FormatError) as caught:
        NvPublic(index, TpmAlg.SHA256, 0, b"", 0)
    assert str(caught.value) == f"TPMS_NV_PUBLIC: {index:#010x} is not an NV index handle"
    assert NvPublic(0x01FFFFFF, TpmAlg.SHA256, 0, b"", 0).nv_index == 0x01FFFFFF


def test_a_name_algorithm_that_is_no_hash_is_refused() -> None:
    with pytest.raises(FormatError) as caught:
        NvPublic(0x01000001, TpmAlg.NULL, 0, b"", 0)
    assert str(caught.value) == "TPMS_NV_PUBLIC: nameAlg 0x0010 is not a hash"


def test_an_auth_policy_longer_than_a_digest_is_refused() -> None:
    assert len(NvPublic(0x01000001, TpmAlg.SHA256, 0, bytes(64), 0).auth_policy) == 64
    with pytest.raises(FormatError) as caught:
        NvPublic(0x01000001, TpmAlg.SHA256, 0, bytes(65), 0)
    assert str(caught.value) == "TPMS_NV_PUBLIC: authPolicy is longer than a digest"
    data = NV_BYTES[:10] + tpm2b(bytes(65)) + _u16(8)
    with pytest.raises(OversizeError) as caught:
        NvPublic.read(reader(data, "TPMS_NV_PUBLIC"))
    assert str(caught.value) == (
        "TPMS_NV_PUBLIC: authPolicy.size 65 exceeds the maximum 64 (at offset 0xc)")


def test_the_reader_refuses_an_inconsistent_area_naming_where_it_ends() -> None:
    data = _u32(0x81000001) + NV_BYTES[4:]
    with pytest.raises(FormatError) as caught:
        NvPublic.from_tpm2b(tpm2b(data))
    assert str(caught.value) == (
        f"TPMS_NV_PUBLIC: TPMS_NV_PUBLIC: 0x81000001 is not an NV index handle "
        f"(at offset {len(data):#x})")


def test_a_cut_nv_public_area_names_each_field() -> None:
    cases = [(0, "nvIndex", 4), (4, "nameAlg", 2), (6, "attributes", 4),
             (10, "authPolicy.size", 2), (12, "authPolicy", 32), (44, "dataSize", 2)]
    for cut, field, size in cases:
        with pytest.raises(TruncatedError) as caught:
            NvPublic.from_tpm2b(tpm2b(NV_BYTES[:cut]))
        assert str(caught.value) == _short("TPMS_NV_PUBLIC", field, size, cut)
    with pytest.raises(TruncatedError) as caught:
        NvPublic.from_tpm2b(tpm2b(NV_BYTES)[:-1])
    assert str(caught.value) == _short("TPM2B_NV_PUBLIC", "TPM2B_NV_PUBLIC", len(NV_BYTES), 2,
                                       len(NV_BYTES) - 1)


def test_an_nv_public_area_with_bytes_after_it_is_refused() -> None:
    with pytest.raises(FormatError) as caught:
        NvPublic.from_tpm2b(tpm2b(NV_BYTES + b"x"))
    assert str(caught.value) == (
        f"TPMS_NV_PUBLIC: 1 unexpected trailing bytes at offset {len(NV_BYTES):#x}")
    with pytest.raises(FormatError) as caught:
        NvPublic.from_tpm2b(tpm2b(NV_BYTES) + b"x")
    assert str(caught.value) == (
        f"TPM2B_NV_PUBLIC: 1 unexpected trailing bytes at offset {len(NV_BYTES) + 2:#x}")


def test_with_attributes_changes_only_the_attributes() -> None:
    changed = NV.with_attributes(0x00020002)
    assert changed == NvPublic(NV.nv_index, NV.name_alg, 0x00020002, NV.auth_policy, 8)
    assert changed.nt is TpmNt.ORDINARY


def test_a_value_out_of_range_is_refused_on_writing() -> None:
    with pytest.raises(UsageError):
        NvPublic(0x01000001, TpmAlg.SHA256, 1 << 32, b"", 0).to_bytes()
