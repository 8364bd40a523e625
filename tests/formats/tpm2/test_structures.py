"""Round trips and strictness of the TPM 2.0 structures (Part 2, revision 1.59)."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.tpm2.attest import ClockInfo, QuoteAttest
from cvm.formats.tpm2.command import AuthCommand, AuthResponse, Command, Response
from cvm.formats.tpm2.constants import TpmAlg, TpmaObject, TpmCc, TpmEccCurve, TpmRh, TpmSt
from cvm.formats.tpm2.nv_public import NvPublic
from cvm.formats.tpm2.pcr_selection import PcrSelection, PcrSelectionList
from cvm.formats.tpm2.public import (
    EccParms,
    EccPoint,
    KeyedHashParms,
    Public,
    RsaParms,
    Scheme,
    SymCipherParms,
    SymDefObject,
)
from cvm.formats.tpm2.sensitive import PrivateBlob, Sensitive
from cvm.formats.tpm2.signature import Signature, SigScheme, Ticket
from cvm.formats.tpm2.tpm2b import reader, writer

HASHES = st.sampled_from([TpmAlg.SHA1, TpmAlg.SHA256, TpmAlg.SHA384, TpmAlg.SHA512])
blobs = st.binary(max_size=64)


@st.composite
def selections(draw: st.DrawFn) -> PcrSelectionList:
    entries = draw(st.lists(st.tuples(HASHES, st.binary(min_size=0, max_size=4)), max_size=4))
    return PcrSelectionList(tuple(PcrSelection(alg, select) for alg, select in entries))


symdefs = st.one_of(
    st.just(SymDefObject()),
    st.builds(SymDefObject, st.just(TpmAlg.AES), st.sampled_from([128, 192, 256]),
              st.just(TpmAlg.CFB)),
)
hash_schemes = st.builds(Scheme, st.sampled_from([TpmAlg.RSASSA, TpmAlg.RSAPSS]), HASHES)


@st.composite
def publics(draw: st.DrawFn) -> Public:
    kind = draw(st.sampled_from([TpmAlg.KEYEDHASH, TpmAlg.SYMCIPHER, TpmAlg.RSA, TpmAlg.ECC]))
    attributes = draw(st.integers(0, 0xFFFFFFFF)) & 0x000F0CF6
    policy = draw(st.sampled_from([b"", bytes(32), b"\x01" * 48]))
    name_alg = draw(HASHES)
    unique: bytes | EccPoint
    if kind == TpmAlg.KEYEDHASH:
        scheme = draw(st.one_of(st.just(Scheme()), st.builds(Scheme, st.just(TpmAlg.HMAC), HASHES),
                                st.builds(Scheme, st.just(TpmAlg.XOR), HASHES,
                                          st.just(TpmAlg.KDF1_SP800_108))))
        parms: object = KeyedHashParms(scheme)
        unique = draw(blobs)
    elif kind == TpmAlg.SYMCIPHER:
        parms = SymCipherParms(draw(symdefs))
        unique = draw(blobs)
    elif kind == TpmAlg.RSA:
        scheme = draw(st.one_of(st.just(Scheme()), hash_schemes))
        parms = RsaParms(draw(symdefs), scheme, draw(st.sampled_from([1024, 2048])),
                         draw(st.integers(0, 0xFFFFFFFF)))
        unique = draw(st.binary(max_size=256))
    else:
        ecdsa = st.builds(Scheme, st.just(TpmAlg.ECDSA), HASHES)
        scheme = draw(st.one_of(st.just(Scheme()), ecdsa))
        parms = EccParms(draw(symdefs), scheme, TpmEccCurve.NIST_P256, Scheme())
        unique = EccPoint(draw(blobs), draw(blobs))
    return Public(kind, name_alg, attributes, policy, parms, unique)  # type: ignore[arg-type]


@given(selections())
def test_pcr_selection_round_trip(value: PcrSelectionList) -> None:
    assert PcrSelectionList.from_bytes(value.to_bytes()) == value


def test_pcr_selection_known_bytes() -> None:
    assert PcrSelectionList.of("sha256", [7]).to_bytes().hex() == "00000001000b03800000"
    text = PcrSelectionList.parse_text("sha256:0,7+sha1:7")
    assert text.to_bytes().hex() == "00000002000b038100000004038000 00".replace(" ", "")
    assert str(text) == "sha256:0,7+sha1:7"
    assert text.items() == ((TpmAlg.SHA256, 0), (TpmAlg.SHA256, 7), (TpmAlg.SHA1, 7))


@given(publics())
def test_public_round_trip(value: Public) -> None:
    assert Public.from_bytes(value.to_bytes()) == value
    assert Public.from_tpm2b(value.to_tpm2b()) == value
    assert value.name()[:2] == value.name_alg.to_bytes(2, "big")


def test_ek_template_vector_round_trips(vectors: Path) -> None:
    data = (vectors / "tpm" / "tpm2-tools" / "ek-template-default.bin").read_bytes()
    public = Public.from_bytes(data)
    assert public.to_bytes() == data
    assert public.type == TpmAlg.RSA
    assert public.attributes == 0x000300B2
    assert public.has(TpmaObject.RESTRICTED)


def test_public_refuses_reserved_bits_and_bad_types() -> None:
    good = Public(TpmAlg.KEYEDHASH, TpmAlg.SHA256, 0x12, b"", KeyedHashParms(), b"")
    data = bytearray(good.to_bytes())
    data[4:8] = (0x12 | 1 << 31).to_bytes(4, "big")
    with pytest.raises(FormatError):
        Public.from_bytes(bytes(data))
    with pytest.raises(FormatError):
        Public.from_bytes(b"\x00\x99" + good.to_bytes()[2:])
    with pytest.raises(FormatError):
        Public.from_bytes(good.to_bytes() + b"\x00")


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    for parse in (Public.from_bytes, Public.from_tpm2b, Sensitive.from_bytes,
                  PrivateBlob.from_tpm2b, Signature.from_bytes, Ticket.from_bytes,
                  QuoteAttest.from_bytes, NvPublic.from_tpm2b, PcrSelectionList.from_bytes):
        with contextlib.suppress(FormatError):
            parse(data)


@given(st.sampled_from([TpmAlg.RSA, TpmAlg.ECC, TpmAlg.KEYEDHASH, TpmAlg.SYMCIPHER]),
       blobs, blobs, st.binary(max_size=300))
def test_sensitive_round_trip(kind: int, auth: bytes, seed: bytes, secret: bytes) -> None:
    value = Sensitive(kind, auth, seed, secret)
    assert Sensitive.from_bytes(value.to_bytes()) == value


@given(st.binary(min_size=1, max_size=64), st.binary(max_size=16), st.binary(min_size=1,
                                                                              max_size=300))
def test_private_blob_round_trip(integrity: bytes, iv: bytes, encrypted: bytes) -> None:
    blob = PrivateBlob(integrity, iv, encrypted)
    assert PrivateBlob.from_tpm2b(blob.to_tpm2b()) == blob


@given(st.one_of(
    st.builds(Signature, st.sampled_from([TpmAlg.RSASSA, TpmAlg.RSAPSS]), HASHES,
              st.binary(max_size=256)),
    st.builds(lambda h, r, s: Signature(TpmAlg.ECDSA, h, r=r, s=s), HASHES, blobs, blobs),
    st.just(Signature(TpmAlg.NULL)),
))
def test_signature_round_trip(value: Signature) -> None:
    assert Signature.from_bytes(value.to_bytes()) == value


@given(st.sampled_from([TpmSt.VERIFIED, TpmSt.CREATION, TpmSt.HASHCHECK]),
       st.sampled_from([TpmRh.OWNER, TpmRh.NULL, TpmRh.ENDORSEMENT]), blobs)
def test_ticket_round_trip(tag: int, hierarchy: int, value: bytes) -> None:
    ticket = Ticket(tag, hierarchy, value)
    assert Ticket.from_bytes(ticket.to_bytes()) == ticket


@given(st.binary(max_size=66), blobs, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1), st.booleans(), st.integers(0, 2**64 - 1), selections(), blobs)
def test_quote_attest_round_trip(signer: bytes, extra: bytes, clock: int, resets: int,
                                 restarts: int, safe: bool, firmware: int,
                                 selection: PcrSelectionList, pcr_digest: bytes) -> None:
    attest = QuoteAttest(signer, extra, ClockInfo(clock, resets, restarts, safe), firmware,
                         selection, pcr_digest)
    assert QuoteAttest.from_bytes(attest.to_bytes()) == attest


def test_quote_attest_known_message() -> None:
    message = bytes.fromhex(
        "ff5443478018" "0022000b" + "25" * 32 + "0008" "0123456789abcdef"
        "000000000000451e" "00000001" "00000000" "01" "2019102300163636"
        "00000001000b03810000" "0020" + "18" * 32
    )
    attest = QuoteAttest.from_bytes(message)
    assert attest.extra_data == bytes.fromhex("0123456789abcdef")
    assert attest.clock_info.clock == 0x451E
    assert str(attest.pcr_select) == "sha256:0,7"
    assert attest.to_bytes() == message
    with pytest.raises(FormatError):
        QuoteAttest.from_bytes(b"\x00" + message[1:])


@given(st.integers(0x01000000, 0x01FFFFFF), HASHES, st.integers(0, 0xFFFFFFFF),
       st.sampled_from([b"", bytes(32)]), st.integers(0, 0xFFFF))
def test_nv_public_round_trip(index: int, alg: int, attributes: int, policy: bytes,
                              size: int) -> None:
    attributes = (attributes & ~0xF0) | (0x10 if attributes & 0x10 else 0)
    value = NvPublic(index, alg, attributes, policy, size)
    assert NvPublic.from_tpm2b(value.to_tpm2b()) == value


@given(st.sampled_from(list(TpmCc)), st.lists(st.integers(0, 2**32 - 1), max_size=3),
       st.lists(st.builds(AuthCommand, st.integers(0, 2**32 - 1), blobs, st.integers(0, 255),
                          blobs), max_size=3), st.binary(max_size=100))
def test_command_round_trip(code: int, handles: list[int], sessions: list[AuthCommand],
                            params: bytes) -> None:
    command = Command(code, tuple(handles), tuple(sessions), params)
    assert Command.parse(command.to_bytes(), len(handles)) == command


@given(st.lists(st.integers(0, 2**32 - 1), max_size=1), st.binary(max_size=100),
       st.lists(st.builds(AuthResponse, blobs, st.integers(0, 255), blobs), max_size=3))
def test_response_round_trip(handles: list[int], params: bytes,
                             sessions: list[AuthResponse]) -> None:
    response = Response(0, tuple(handles), params, tuple(sessions))
    with_sessions = response.to_bytes(True)
    assert Response.parse(with_sessions, len(handles)) == response
    plain = Response(0, tuple(handles), params)
    assert Response.parse(plain.to_bytes(False), len(handles)) == plain


def test_error_response_is_ten_bytes() -> None:
    data = Response(0x99D).to_bytes(True)
    assert data.hex() == "80010000000a0000099d"
    assert Response.parse(data, 1).code == 0x99D


def test_sig_scheme_round_trip() -> None:
    for scheme in (SigScheme(), SigScheme(TpmAlg.ECDSA, TpmAlg.SHA256)):
        source = reader(scheme.write(writer()).to_bytes(), "scheme")
        assert SigScheme.read(source) == scheme


# ---- kept encodings: a public or sensitive area keeps the bytes it was parsed from (or its
# first encoding); safe because both encodings are canonical, which these tests hold ---------
SENSITIVE_TYPES = st.sampled_from([TpmAlg.RSA, TpmAlg.ECC, TpmAlg.KEYEDHASH, TpmAlg.SYMCIPHER])
EDITS = st.lists(st.tuples(st.integers(0, 1 << 12), st.integers(0, 0xFF)), max_size=3)


def _edited(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    changed = bytearray(data)
    for position, value in edits:
        changed[position % len(data)] = value
    return bytes(changed[: len(changed) - cut % 3])


@given(publics(), EDITS, st.integers(0, 2))
def test_every_public_area_the_reader_accepts_is_the_writers_encoding(
        value: Public, edits: list[tuple[int, int]], cut: int) -> None:
    data = _edited(value.write(writer()).to_bytes(), edits, cut)
    try:
        parsed = Public.from_bytes(data)
    except FormatError:
        return
    assert parsed.write(writer()).to_bytes() == data  # canonical: the kept bytes are right
    assert parsed.to_bytes() == data
    assert parsed.to_tpm2b() == len(data).to_bytes(2, "big") + data


@given(publics())
def test_a_public_area_keeps_its_encoding(value: Public) -> None:
    built = dataclasses.replace(value)  # made, not parsed: encoded at the first to_bytes
    encoding = built.to_bytes()
    assert encoding == value.write(writer()).to_bytes()
    assert built.to_bytes() is encoding  # kept, not encoded again
    parsed = Public.from_bytes(bytearray(encoding))
    assert parsed.to_bytes() == encoding and type(parsed.to_bytes()) is bytes
    assert parsed == built and hash(parsed) == hash(built)  # the kept bytes are no field
    assert "_encoding" not in repr(parsed)


def test_a_changed_public_area_is_encoded_afresh() -> None:
    public = Public.from_bytes(Public(TpmAlg.KEYEDHASH, TpmAlg.SHA256, 0x12, b"",
                                      KeyedHashParms(), b"one").to_bytes())
    other = public.with_unique(b"two")
    assert other.to_bytes() == public.to_bytes()[:-3] + b"two"
    assert other.name() != public.name()
    assert public.to_bytes().endswith(b"one")


@given(SENSITIVE_TYPES, st.binary(max_size=64), st.binary(max_size=64),
       st.binary(max_size=200), EDITS, st.integers(0, 2))
def test_every_sensitive_area_the_reader_accepts_is_the_writers_encoding(
        kind: int, auth: bytes, seed: bytes, secret: bytes, edits: list[tuple[int, int]],
        cut: int) -> None:
    data = _edited(Sensitive(kind, auth, seed, secret).to_bytes(), edits, cut)
    try:
        parsed = Sensitive.from_bytes(data)
    except FormatError:
        return
    assert parsed.write(writer()).to_bytes() == data
    assert parsed.to_bytes() == data


@given(SENSITIVE_TYPES, st.binary(max_size=64), st.binary(max_size=64),
       st.binary(max_size=200))
def test_a_sensitive_area_keeps_its_encoding(kind: int, auth: bytes, seed: bytes,
                                             secret: bytes) -> None:
    built = Sensitive(kind, auth, seed, secret)
    encoding = built.to_bytes()
    assert encoding == built.write(writer()).to_bytes()
    assert built.to_bytes() is encoding
    parsed = Sensitive.from_bytes(bytearray(encoding))
    assert parsed.to_bytes() == encoding and type(parsed.to_bytes()) is bytes
    assert parsed == built and "_encoding" not in repr(parsed)



@given(publics())
def test_a_parsed_public_area_gives_back_the_very_bytes_it_was_read_from(value: Public) -> None:
    data = value.write(writer()).to_bytes()
    assert Public.from_bytes(data).to_bytes() is data  # kept, not encoded again


@given(SENSITIVE_TYPES, st.binary(max_size=64), st.binary(max_size=64))
def test_a_parsed_sensitive_area_gives_back_the_very_bytes_it_was_read_from(
        kind: int, auth: bytes, secret: bytes) -> None:
    data = Sensitive(kind, auth, b"", secret).write(writer()).to_bytes()
    assert Sensitive.from_bytes(data).to_bytes() is data


def test_a_short_sensitive_area_is_refused_by_name() -> None:
    with pytest.raises(FormatError, match=r"^TPMT_SENSITIVE: sensitiveType needs 2 bytes at "
                                          r"offset 0x0, only 1 left$"):
        Sensitive.from_bytes(b"\x00")
