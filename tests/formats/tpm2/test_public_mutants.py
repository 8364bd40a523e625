"""TPMT_PUBLIC, TPMT_SENSITIVE, _PRIVATE and TPML_PCR_SELECTION: every field a guest's
command buffer can end inside is named in the refusal, with its offset; every size limit is
exact (the largest allowed passes, one more is refused, and the error class says which TPM
code the vTPM answers: TruncatedError is TPM_RC_INSUFFICIENT, OversizeError TPM_RC_SIZE)."""

from __future__ import annotations

import dataclasses

import pytest

from cvm.errors import FormatError, OversizeError, TruncatedError
from cvm.formats.tpm2.constants import TpmAlg, TpmEccCurve
from cvm.formats.tpm2.pcr_selection import (
    PcrSelection,
    PcrSelectionList,
    check_banks,
    selected_pcrs,
)
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
from cvm.formats.tpm2.sensitive import PrivateBlob, Sensitive, SensitiveCreate
from cvm.formats.tpm2.tpm2b import reader, tpm2b

# A layout is the list of fields in order: (label, width) for a fixed field or a take,
# (label, "tpm2b", body length) for a TPM2B.
Layout = list[tuple[str, int] | tuple[str, str, int]]


def truncations(what: str, layout: Layout, start: int = 0) -> list[tuple[int, str]]:
    """Each cut at the start of a field (and after a TPM2B's size) and the refusal it gets."""
    cuts = []
    offset = start
    for field in layout:
        if len(field) == 2:
            label, width = field[0], int(field[1])
            cuts.append(
                (offset, f"{what}: {label} needs {width} bytes at offset {offset:#x}, only 0 left")
            )
            offset += width
        else:
            label, body = field[0], int(field[2])
            cuts.append(
                (offset, f"{what}: {label}.size needs 2 bytes at offset {offset:#x}, only 0 left")
            )
            if body:
                cuts.append(
                    (
                        offset + 2,
                        f"{what}: {label} needs {body} bytes at offset "
                        f"{offset + 2:#x}, only 0 left",
                    )
                )
            offset += 2 + body
    return cuts


def _head(policy: int) -> Layout:
    return [("type", 2), ("nameAlg", 2), ("objectAttributes", 4), ("authPolicy", "tpm2b", policy)]


RSA = Public(
    TpmAlg.RSA,
    TpmAlg.SHA256,
    0x00030072,
    bytes(32),
    RsaParms(SymDefObject.aes_cfb(), Scheme(TpmAlg.RSASSA, TpmAlg.SHA256), 2048, 3),
    b"\x01\x02\x03\x04",
)
RSA_LAYOUT: Layout = [
    *_head(32),
    ("symmetric.algorithm", 2),
    ("symmetric.keyBits", 2),
    ("symmetric.mode", 2),
    ("scheme", 2),
    ("hashAlg", 2),
    ("keyBits", 2),
    ("exponent", 4),
    ("unique", "tpm2b", 4),
]
ECC = Public(
    TpmAlg.ECC,
    TpmAlg.SHA256,
    0x00040072,
    b"",
    EccParms(SymDefObject(), Scheme(TpmAlg.ECDSA, TpmAlg.SHA384), TpmEccCurve.NIST_P256, Scheme()),
    EccPoint(b"\x11" * 3, b"\x22" * 2),
)
ECC_LAYOUT: Layout = [
    *_head(0),
    ("symmetric.algorithm", 2),
    ("scheme", 2),
    ("hashAlg", 2),
    ("curveID", 2),
    ("scheme", 2),
    ("unique.x", "tpm2b", 3),
    ("unique.y", "tpm2b", 2),
]
KEYED = Public(
    TpmAlg.KEYEDHASH,
    TpmAlg.SHA1,
    0x00000040,
    b"\x05" * 20,
    KeyedHashParms(Scheme(TpmAlg.XOR, TpmAlg.SHA256, TpmAlg.KDF1_SP800_108)),
    b"\x07" * 32,
)
KEYED_LAYOUT: Layout = [
    *_head(20),
    ("scheme", 2),
    ("hashAlg", 2),
    ("kdf", 2),
    ("unique", "tpm2b", 32),
]
SYM = Public(
    TpmAlg.SYMCIPHER,
    TpmAlg.SHA256,
    0x00000060,
    b"",
    SymCipherParms(SymDefObject.aes_cfb(256)),
    b"\x09" * 5,
)
SYM_LAYOUT: Layout = [
    *_head(0),
    ("symmetric.algorithm", 2),
    ("symmetric.keyBits", 2),
    ("symmetric.mode", 2),
    ("unique", "tpm2b", 5),
]

PUBLICS = [(RSA, RSA_LAYOUT), (ECC, ECC_LAYOUT), (KEYED, KEYED_LAYOUT), (SYM, SYM_LAYOUT)]


@pytest.mark.parametrize(("public", "layout"), PUBLICS, ids=["rsa", "ecc", "keyedhash", "sym"])
def test_a_public_area_cut_inside_any_field_is_refused_naming_the_field(
    public: Public, layout: Layout
) -> None:
    data = public.to_bytes()
    assert Public.from_bytes(data) == public
    for cut, message in truncations("TPMT_PUBLIC", layout):
        with pytest.raises(TruncatedError) as caught:
            Public.from_bytes(data[:cut])
        assert str(caught.value) == message


def test_a_public_area_with_bytes_after_it_is_refused() -> None:
    data = RSA.to_bytes()
    with pytest.raises(
        FormatError,
        match=rf"^TPMT_PUBLIC: 1 unexpected trailing bytes at "
        rf"offset {len(data):#x}$",
    ):
        Public.from_bytes(data + b"\0")


def test_the_tpm2b_public_names_itself_and_covers_the_area_exactly() -> None:
    body = RSA.to_bytes()
    assert Public.from_tpm2b(tpm2b(body)) == RSA
    with pytest.raises(TruncatedError) as caught:
        Public.from_tpm2b(tpm2b(body)[:-1])
    assert str(caught.value) == (
        f"TPM2B_PUBLIC: TPM2B_PUBLIC needs {len(body)} bytes at "
        f"offset 0x2, only {len(body) - 1} left"
    )
    with pytest.raises(FormatError) as trailing:
        Public.from_tpm2b(tpm2b(body) + b"\0")
    assert str(trailing.value) == (
        f"TPM2B_PUBLIC: 1 unexpected trailing bytes at offset {len(body) + 2:#x}"
    )
    with pytest.raises(FormatError, match=r"^TPM2B_PUBLIC: TPM2B_PUBLIC is empty "):
        Public.from_tpm2b(b"\0\0")
    with pytest.raises(FormatError, match=r"^TPM2B_PUBLIC: inPublic is empty "):
        Public.read_tpm2b(reader(b"\0\0", "TPM2B_PUBLIC"), "inPublic")


def _public_at_limit(policy: int, unique: int) -> bytes:
    return (
        TpmAlg.KEYEDHASH.to_bytes(2, "big")
        + TpmAlg.SHA256.to_bytes(2, "big")
        + bytes(4)
        + tpm2b(bytes(policy))
        + TpmAlg.NULL.to_bytes(2, "big")
        + tpm2b(bytes(unique))
    )


def test_the_public_sizes_are_bounded_exactly() -> None:
    assert len(Public.from_bytes(_public_at_limit(64, 512)).auth_policy) == 64
    with pytest.raises(
        OversizeError, match=r"^TPMT_PUBLIC: authPolicy.size 65 exceeds the maximum 64"
    ):
        Public.from_bytes(_public_at_limit(65, 0))
    with pytest.raises(
        OversizeError, match=r"^TPMT_PUBLIC: unique.size 513 exceeds the maximum 512"
    ):
        Public.from_bytes(_public_at_limit(0, 513))
    point = ECC.to_bytes()[:-9]  # up to unique.x
    assert Public.from_bytes(point + tpm2b(bytes(128)) + tpm2b(bytes(128))).unique == EccPoint(
        bytes(128), bytes(128)
    )
    with pytest.raises(
        OversizeError, match=r"^TPMT_PUBLIC: unique.x.size 129 exceeds the maximum 128"
    ):
        Public.from_bytes(point + tpm2b(bytes(129)) + tpm2b(b""))
    with pytest.raises(
        OversizeError, match=r"^TPMT_PUBLIC: unique.y.size 129 exceeds the maximum 128"
    ):
        Public.from_bytes(point + tpm2b(b"") + tpm2b(bytes(129)))


# --- TPMT_SENSITIVE, TPM2B_SENSITIVE_CREATE, _PRIVATE ------------------------------------


def test_a_sensitive_area_cut_inside_any_field_is_refused_naming_the_field() -> None:
    sensitive = Sensitive(TpmAlg.KEYEDHASH, b"\x01" * 5, b"\x02" * 32, b"\x03" * 7)
    data = sensitive.to_bytes()
    assert Sensitive.from_bytes(data) == sensitive
    layout: Layout = [
        ("sensitiveType", 2),
        ("authValue", "tpm2b", 5),
        ("seedValue", "tpm2b", 32),
        ("sensitive", "tpm2b", 7),
    ]
    for cut, message in truncations("TPMT_SENSITIVE", layout):
        with pytest.raises(TruncatedError) as caught:
            Sensitive.from_bytes(data[:cut])
        assert str(caught.value) == message
    with pytest.raises(FormatError, match=r"^TPMT_SENSITIVE: 1 unexpected trailing bytes"):
        Sensitive.from_bytes(data + b"\0")


@pytest.mark.parametrize("kind", [TpmAlg.RSA, TpmAlg.ECC, TpmAlg.KEYEDHASH, TpmAlg.SYMCIPHER])
def test_each_object_type_has_a_sensitive_area(kind: int) -> None:
    assert Sensitive.from_bytes(Sensitive(kind, b"", b"", b"").to_bytes()).sensitive_type == kind


def test_a_sensitive_area_of_another_type_is_refused() -> None:
    with pytest.raises(FormatError) as caught:
        Sensitive.from_bytes(Sensitive(TpmAlg.SHA256, b"", b"", b"").to_bytes())
    assert str(caught.value) == (
        "TPMT_SENSITIVE: sensitiveType 0x000b is not supported (at offset 0x2)"
    )


def _sensitive(auth: int, seed: int, body: int) -> bytes:
    return (
        TpmAlg.RSA.to_bytes(2, "big") + tpm2b(bytes(auth)) + tpm2b(bytes(seed)) + tpm2b(bytes(body))
    )


def test_the_sensitive_sizes_are_bounded_exactly() -> None:
    assert Sensitive.from_bytes(_sensitive(64, 64, 1024)).sensitive == bytes(1024)
    for sizes, field, limit in (
        ((65, 0, 0), "authValue", 64),
        ((0, 65, 0), "seedValue", 64),
        ((0, 0, 1025), "sensitive", 1024),
    ):
        with pytest.raises(
            OversizeError,
            match=rf"^TPMT_SENSITIVE: {field}.size "
            rf"{limit + 1} exceeds the maximum {limit} ",
        ):
            Sensitive.from_bytes(_sensitive(*sizes))
    with pytest.raises(FormatError, match="exceeds the maximum 64"):
        Sensitive(TpmAlg.RSA, bytes(65), b"", b"").to_bytes()
    with pytest.raises(FormatError, match="exceeds the maximum 64"):
        Sensitive(TpmAlg.RSA, b"", bytes(65), b"").to_bytes()
    with pytest.raises(FormatError, match="exceeds the maximum 1024"):
        Sensitive(TpmAlg.RSA, b"", b"", bytes(1025)).to_bytes()


def test_a_sensitive_create_is_read_field_by_field() -> None:
    created = SensitiveCreate(b"\x01" * 64, b"\x02" * 256)
    assert SensitiveCreate.read_tpm2b(reader(created.to_tpm2b(), "in")) == created
    inner = tpm2b(b"\x01" * 3) + tpm2b(b"\x02" * 4)
    layout: Layout = [("userAuth", "tpm2b", 3), ("data", "tpm2b", 4)]
    for cut, message in truncations("TPMS_SENSITIVE_CREATE", layout):
        with pytest.raises(TruncatedError) as caught:
            SensitiveCreate.read_tpm2b(reader(tpm2b(inner[:cut]), "in"))
        assert str(caught.value) == message
    with pytest.raises(TruncatedError, match=r"^in: TPM2B_SENSITIVE_CREATE.size needs 2 bytes"):
        SensitiveCreate.read_tpm2b(reader(b"\0", "in"))
    with pytest.raises(
        OversizeError,
        match=r"^TPMS_SENSITIVE_CREATE: userAuth.size 65 exceeds "
        r"the maximum 64 ",
    ):
        SensitiveCreate.read_tpm2b(reader(tpm2b(tpm2b(bytes(65)) + tpm2b(b"")), "in"))
    with pytest.raises(
        OversizeError,
        match=r"^TPMS_SENSITIVE_CREATE: data.size 257 exceeds "
        r"the maximum 256 ",
    ):
        SensitiveCreate.read_tpm2b(reader(tpm2b(tpm2b(b"") + tpm2b(bytes(257))), "in"))
    with pytest.raises(FormatError, match=r"^TPMS_SENSITIVE_CREATE: 1 unexpected trailing"):
        SensitiveCreate.read_tpm2b(reader(tpm2b(inner + b"\0"), "in"))
    with pytest.raises(FormatError, match="exceeds the maximum 64"):
        SensitiveCreate(bytes(65)).to_tpm2b()
    with pytest.raises(FormatError, match="exceeds the maximum 256"):
        SensitiveCreate(b"", bytes(257)).to_tpm2b()


def test_a_private_blob_is_read_field_by_field() -> None:
    blob = PrivateBlob(b"\x01" * 32, b"\x02" * 16, b"\x03" * 9)
    assert PrivateBlob.from_tpm2b(blob.to_tpm2b()) == blob
    layout: Layout = [("integrityOuter", "tpm2b", 32), ("iv", "tpm2b", 16)]
    for cut, message in truncations("_PRIVATE", layout):
        with pytest.raises(TruncatedError) as caught:
            PrivateBlob.from_buffer(blob.buffer()[:cut])
        assert str(caught.value) == message
    with pytest.raises(TruncatedError) as outer:
        PrivateBlob.from_tpm2b(blob.to_tpm2b()[:-1])
    assert str(outer.value) == (
        f"TPM2B_PRIVATE: TPM2B_PRIVATE needs {len(blob.buffer())} bytes "
        f"at offset 0x2, only {len(blob.buffer()) - 1} left"
    )
    with pytest.raises(FormatError, match=r"^TPM2B_PRIVATE: 1 unexpected trailing bytes"):
        PrivateBlob.from_tpm2b(blob.to_tpm2b() + b"\0")


def test_the_private_blob_sizes_are_bounded_exactly() -> None:
    assert PrivateBlob.from_buffer(tpm2b(bytes(64)) + tpm2b(bytes(16)) + b"x").iv == bytes(16)
    with pytest.raises(
        OversizeError,
        match=r"^_PRIVATE: integrityOuter.size 65 exceeds the "
        r"maximum 64 ",
    ):
        PrivateBlob.from_buffer(tpm2b(bytes(65)) + tpm2b(b"") + b"x")
    with pytest.raises(OversizeError, match=r"^_PRIVATE: iv.size 17 exceeds the maximum 16 "):
        PrivateBlob.from_buffer(tpm2b(b"i") + tpm2b(bytes(17)) + b"x")
    largest = tpm2b(tpm2b(b"i") + tpm2b(b"") + bytes(2048 - 5))
    assert len(PrivateBlob.from_tpm2b(largest).encrypted) == 2043
    too_big = tpm2b(tpm2b(b"i") + tpm2b(b"") + bytes(2048 - 4))
    with pytest.raises(
        OversizeError,
        match=r"^TPM2B_PRIVATE: TPM2B_PRIVATE.size 2049 exceeds "
        r"the maximum 2048 ",
    ):
        PrivateBlob.from_tpm2b(too_big)
    with pytest.raises(FormatError, match="exceeds the maximum 2048"):
        PrivateBlob(b"i", b"", bytes(2048 - 4)).to_tpm2b()


@pytest.mark.parametrize(("integrity", "encrypted"), [(b"", b"x"), (b"i", b""), (b"", b"")])
def test_a_private_blob_without_integrity_or_ciphertext_is_refused(
    integrity: bytes, encrypted: bytes
) -> None:
    with pytest.raises(FormatError) as caught:
        PrivateBlob.from_buffer(tpm2b(integrity) + tpm2b(b"") + encrypted)
    assert str(caught.value) == "_PRIVATE: integrity or encrypted sensitive area is empty"


# --- TPMS_PCR_SELECTION / TPML_PCR_SELECTION ----------------------------------------------


def test_a_pcr_selection_cut_inside_any_field_is_refused_naming_the_field() -> None:
    data = PcrSelectionList.of("sha256", [0, 7, 23]).to_bytes()
    layout: Layout = [("count", 4), ("hash", 2), ("sizeofSelect", 1), ("pcrSelect", 3)]
    for cut, message in truncations("TPML_PCR_SELECTION", layout):
        with pytest.raises(TruncatedError) as caught:
            PcrSelectionList.from_bytes(data[:cut])
        assert str(caught.value) == message
    with pytest.raises(FormatError, match=r"^TPML_PCR_SELECTION: 1 unexpected trailing bytes"):
        PcrSelectionList.from_bytes(data + b"\0")


def test_sizeof_select_is_bounded_at_32_bytes() -> None:
    widest = PcrSelection(TpmAlg.SHA256, b"\x80" * 32)
    assert widest.pcrs[-1] == 255
    read = PcrSelectionList.from_bytes(PcrSelectionList((widest,)).to_bytes())
    assert read.selections == (widest,)
    with pytest.raises(FormatError) as caught:
        PcrSelection(TpmAlg.SHA256, bytes(33))
    assert str(caught.value) == "TPMS_PCR_SELECTION: sizeofSelect 33 too large"
    data = b"\0\0\0\x01" + TpmAlg.SHA256.to_bytes(2, "big") + b"\x21" + bytes(33)
    with pytest.raises(FormatError) as read_caught:
        PcrSelectionList.from_bytes(data)
    assert str(read_caught.value) == "TPML_PCR_SELECTION: sizeofSelect 33 too large (at offset 0x7)"


def test_a_pcr_index_must_fit_the_selection_it_is_put_in() -> None:
    assert PcrSelection.of("sha256", [23]).select == b"\0\0\x80"
    assert PcrSelection.of("sha256", [31], size=4).pcrs == (31,)
    for pcr, size in ((24, 3), (32, 4), (-1, 3), (27, 3)):
        with pytest.raises(FormatError) as caught:
            PcrSelection.of("sha256", [pcr], size=size)
        assert str(caught.value) == f"PCR {pcr} does not fit a {size}-byte selection"


def test_the_selected_pcrs_are_the_bits_of_each_byte_ascending() -> None:
    assert selected_pcrs(b"") == ()
    assert selected_pcrs(b"\x81\x00\x01\x80") == (0, 7, 16, 31)
    assert selected_pcrs(bytes(4) + b"\x02") == (33,)
    assert PcrSelection(TpmAlg.SHA1, b"\xff").pcrs == tuple(range(8))
    assert str(PcrSelection(TpmAlg.SHA1, b"\x03")) == "sha1:0,1"
    assert str(PcrSelection(0x1234, b"\x03")) == "0x1234:0,1"


def test_the_list_holds_at_most_sixteen_banks() -> None:
    sixteen = PcrSelectionList(tuple(PcrSelection(TpmAlg.SHA256) for _ in range(16)))
    assert len(PcrSelectionList.from_bytes(sixteen.to_bytes()).selections) == 16
    with pytest.raises(FormatError) as caught:
        PcrSelectionList(tuple(PcrSelection(TpmAlg.SHA256) for _ in range(17)))
    assert str(caught.value) == "TPML_PCR_SELECTION: 17 entries exceed 16"
    with pytest.raises(FormatError) as read_caught:
        PcrSelectionList.from_bytes(b"\0\0\0\x11" + bytes(17 * 3))
    assert str(read_caught.value) == (
        "TPML_PCR_SELECTION: TPML_PCR_SELECTION count 17 exceeds 16 (at offset 0x4)"
    )


def test_the_text_notation_names_the_bad_part() -> None:
    parsed = PcrSelectionList.parse_text("sha256:0,0x7, +sha1:7")
    assert parsed.items() == ((TpmAlg.SHA256, 0), (TpmAlg.SHA256, 7), (TpmAlg.SHA1, 7))
    assert str(parsed) == "sha256:0,7+sha1:7"
    with pytest.raises(FormatError) as caught:
        PcrSelectionList.parse_text("sha256:0,x")
    assert str(caught.value) == "bad PCR list in 'sha256:0,x'"


def test_check_banks_refuses_an_unknown_bank_and_a_wide_selection() -> None:
    check_banks(PcrSelectionList((PcrSelection(TpmAlg.SHA384, bytes(3)),)))
    with pytest.raises(FormatError) as bank:
        check_banks(PcrSelectionList((PcrSelection(0x0099, bytes(3)),)))
    assert str(bank.value) == "PCR bank 0x0099 is not supported"
    with pytest.raises(FormatError) as wide:
        check_banks(PcrSelectionList((PcrSelection(TpmAlg.SHA256, bytes(4)),)))
    assert str(wide.value) == "sizeofSelect 4 exceeds 3"


# --- TPMT_PUBLIC's choices: schemes, symmetric definitions, the object's consistency -----

BE = "big"


def _keyedhash_with(scheme: bytes) -> bytes:
    head = TpmAlg.KEYEDHASH.to_bytes(2, BE) + TpmAlg.SHA256.to_bytes(2, BE) + bytes(4) + tpm2b(b"")
    return head + scheme + tpm2b(b"")


def _symcipher_with(symmetric: bytes) -> bytes:
    head = TpmAlg.SYMCIPHER.to_bytes(2, BE) + TpmAlg.SHA256.to_bytes(2, BE) + bytes(4) + tpm2b(b"")
    return head + symmetric + tpm2b(b"")


def test_a_scheme_outside_its_family_is_refused_naming_the_family() -> None:
    with pytest.raises(FormatError) as caught:
        Public.from_bytes(_keyedhash_with(TpmAlg.RSASSA.to_bytes(2, BE)))
    assert str(caught.value) == (
        "TPMT_PUBLIC: keyedhash scheme 0x0014 is not allowed (at offset 0xc)"
    )


def test_a_scheme_hash_that_is_no_hash_is_refused() -> None:
    scheme = TpmAlg.HMAC.to_bytes(2, BE) + TpmAlg.AES.to_bytes(2, BE)
    with pytest.raises(FormatError) as caught:
        Public.from_bytes(_keyedhash_with(scheme))
    assert str(caught.value) == (
        "TPMT_PUBLIC: scheme hash 0x0006 is not a supported hash (at offset 0xe)"
    )


def test_a_symmetric_algorithm_other_than_aes_is_refused() -> None:
    with pytest.raises(FormatError) as caught:
        Public.from_bytes(_symcipher_with(TpmAlg.SHA256.to_bytes(2, BE)))
    assert str(caught.value) == (
        "TPMT_PUBLIC: symmetric algorithm 0x000b is not supported (at offset 0xc)"
    )


@pytest.mark.parametrize("bits", [128, 192, 256])
@pytest.mark.parametrize("mode", [TpmAlg.CFB, TpmAlg.NULL])
def test_aes_of_each_key_size_in_cfb_or_null_mode_is_taken(bits: int, mode: int) -> None:
    symmetric = TpmAlg.AES.to_bytes(2, BE) + bits.to_bytes(2, BE) + mode.to_bytes(2, BE)
    read = Public.from_bytes(_symcipher_with(symmetric)).parameters
    assert read == SymCipherParms(SymDefObject(TpmAlg.AES, bits, mode))


@pytest.mark.parametrize(
    ("bits", "mode"), [(129, TpmAlg.CFB), (64, TpmAlg.NULL), (128, 0x0040), (192, TpmAlg.AES)]
)
def test_aes_of_another_key_size_or_mode_is_refused(bits: int, mode: int) -> None:
    symmetric = TpmAlg.AES.to_bytes(2, BE) + bits.to_bytes(2, BE) + mode.to_bytes(2, BE)
    with pytest.raises(FormatError) as caught:
        Public.from_bytes(_symcipher_with(symmetric))
    assert str(caught.value) == (
        f"TPMT_PUBLIC: AES-{bits} mode {mode:#06x} is not supported (at offset 0x10)"
    )


def test_aes_cfb_defaults_to_128_bits() -> None:
    assert SymDefObject.aes_cfb() == SymDefObject(TpmAlg.AES, 128, TpmAlg.CFB)


def test_the_tpm2b_public_is_named_tpm2b_public_by_default() -> None:
    with pytest.raises(TruncatedError) as caught:
        Public.read_tpm2b(reader(b"\0", "in"))
    assert str(caught.value) == "in: TPM2B_PUBLIC.size needs 2 bytes at offset 0x0, only 1 left"


def test_an_object_without_a_name_algorithm_has_no_name() -> None:
    unnamed = Public(TpmAlg.SYMCIPHER, TpmAlg.NULL, 0, b"", SymCipherParms(), b"")
    with pytest.raises(FormatError) as caught:
        unnamed.name()
    assert str(caught.value) == "an object with nameAlg NULL has no Name"
    assert RSA.name()[:2] == b"\x00\x0b"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"parameters": RsaParms()}, "TPMT_PUBLIC: parameters do not match type 0x0025"),
        ({"type": 0x0099}, "TPMT_PUBLIC: parameters do not match type 0x0099"),
        ({"unique": EccPoint()}, "TPMT_PUBLIC: unique does not match the object type"),
        ({"attributes": 0x00000001}, "TPMT_PUBLIC: reserved objectAttributes 0x00000001"),
        ({"attributes": 0x80000020}, "TPMT_PUBLIC: reserved objectAttributes 0x80000020"),
        ({"name_alg": TpmAlg.AES}, "TPMT_PUBLIC: nameAlg 0x0006 is not a hash"),
        ({"auth_policy": bytes(65)}, "TPMT_PUBLIC: authPolicy is longer than a digest"),
    ],
)
def test_a_public_area_that_contradicts_itself_is_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(FormatError) as caught:
        dataclasses.replace(SYM, **changes)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_an_ecc_object_needs_a_point_and_only_an_ecc_object_has_one() -> None:
    with pytest.raises(FormatError, match=r"^TPMT_PUBLIC: unique does not match"):
        dataclasses.replace(ECC, unique=b"")
    assert dataclasses.replace(ECC, auth_policy=bytes(64)).auth_policy == bytes(64)
    assert dataclasses.replace(SYM, name_alg=TpmAlg.NULL).name_alg == TpmAlg.NULL


def test_a_parsed_public_area_that_contradicts_itself_names_the_offset() -> None:
    data = bytearray(SYM.to_bytes())
    data[2:4] = TpmAlg.AES.to_bytes(2, BE)
    with pytest.raises(FormatError) as caught:
        Public.from_bytes(bytes(data))
    assert str(caught.value) == (
        f"TPMT_PUBLIC: TPMT_PUBLIC: nameAlg 0x0006 is not a hash (at offset {len(data):#x})"
    )
    data = bytearray(SYM.to_bytes())
    data[0:2] = b"\x00\x99"
    with pytest.raises(FormatError) as kind:
        Public.from_bytes(bytes(data))
    assert str(kind.value) == "TPMT_PUBLIC: object type 0x0099 is not supported (at offset 0xa)"


def test_the_bank_is_what_comes_before_the_first_colon() -> None:
    with pytest.raises(FormatError) as caught:
        PcrSelectionList.parse_text("sha256:0:1")
    assert str(caught.value) == "bad PCR list in 'sha256:0:1'"
