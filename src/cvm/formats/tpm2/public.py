"""TPMT_PUBLIC / TPM2B_PUBLIC: the public area of an object, and its Name.

TCG "TPM 2.0 Library, Part 2: Structures", revision 1.59: Table 221 (TPMT_PUBLIC: ``type ‖
nameAlg ‖ objectAttributes ‖ TPM2B authPolicy ‖ TPMU_PUBLIC_PARMS ‖ TPMU_PUBLIC_ID``),
Table 222 (TPM2B_PUBLIC), Table 218 (TPMU_PUBLIC_PARMS), Tables 213–216 (TPMS_KEYEDHASH_PARMS,
TPMS_SYMCIPHER_PARMS, TPMS_RSA_PARMS, TPMS_ECC_PARMS), Table 140 (TPMT_SYM_DEF_OBJECT),
Tables 155–166 (the scheme unions) and Table 217 (TPMU_PUBLIC_ID). Part 1 section 16
("Names"): ``Name = nameAlg ‖ H_nameAlg(TPMT_PUBLIC)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from cvm.errors import FormatError
from cvm.formats.tpm2.constants import (
    TPMA_OBJECT_RESERVED,
    TpmAlg,
    TpmEccCurve,
    digest,
    is_hash_alg,
)
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, tpm2b, writer
from cvm.wire import Reader, Writer

MAX_UNIQUE = 512
MAX_DIGEST = 64

_SCHEMES_WITH_HASH = {
    TpmAlg.HMAC, TpmAlg.XOR, TpmAlg.RSASSA, TpmAlg.RSAPSS, TpmAlg.OAEP, TpmAlg.ECDSA,
    TpmAlg.ECDH, TpmAlg.SM2, TpmAlg.ECSCHNORR, TpmAlg.MGF1, TpmAlg.KDF1_SP800_56A,
    TpmAlg.KDF2, TpmAlg.KDF1_SP800_108,
}
_ALLOWED = {
    "keyedhash": {TpmAlg.NULL, TpmAlg.HMAC, TpmAlg.XOR},
    "rsa": {TpmAlg.NULL, TpmAlg.RSASSA, TpmAlg.RSAPSS, TpmAlg.OAEP, TpmAlg.RSAES},
    "ecc": {TpmAlg.NULL, TpmAlg.ECDSA, TpmAlg.ECDH, TpmAlg.SM2, TpmAlg.ECSCHNORR},
    "kdf": {TpmAlg.NULL, TpmAlg.MGF1, TpmAlg.KDF1_SP800_56A, TpmAlg.KDF2, TpmAlg.KDF1_SP800_108},
}


@dataclass(frozen=True)
class Scheme:
    """A TPMT_*_SCHEME: ``scheme`` and, unless NULL/RSAES, ``hashAlg`` (XOR adds ``kdf``)."""

    scheme: int = TpmAlg.NULL
    hash_alg: int = TpmAlg.NULL
    kdf: int = TpmAlg.NULL

    @classmethod
    def read(cls, source: Reader, family: str) -> Scheme:
        scheme = source.u16("scheme")
        if scheme not in _ALLOWED[family]:
            raise source.fail(f"{family} scheme {scheme:#06x} is not allowed")
        if scheme not in _SCHEMES_WITH_HASH:
            return cls(scheme)
        hash_id = source.u16("hashAlg")
        if not is_hash_alg(hash_id):
            raise source.fail(f"scheme hash {hash_id:#06x} is not a supported hash")
        kdf = source.u16("kdf") if scheme == TpmAlg.XOR else TpmAlg.NULL
        return cls(scheme, hash_id, kdf)

    def write(self, sink: Writer) -> Writer:
        sink.u16(self.scheme)
        if self.scheme in _SCHEMES_WITH_HASH:
            sink.u16(self.hash_alg)
            if self.scheme == TpmAlg.XOR:
                sink.u16(self.kdf)
        return sink


@dataclass(frozen=True)
class SymDefObject:
    """TPMT_SYM_DEF_OBJECT: NULL, or AES with keyBits and mode."""

    algorithm: int = TpmAlg.NULL
    key_bits: int = 0
    mode: int = TpmAlg.NULL

    @classmethod
    def aes_cfb(cls, key_bits: int = 128) -> SymDefObject:
        return cls(TpmAlg.AES, key_bits, TpmAlg.CFB)

    @classmethod
    def read(cls, source: Reader) -> SymDefObject:
        algorithm = source.u16("symmetric.algorithm")
        if algorithm == TpmAlg.NULL:
            return cls()
        if algorithm != TpmAlg.AES:
            raise source.fail(f"symmetric algorithm {algorithm:#06x} is not supported")
        bits = source.u16("symmetric.keyBits")
        mode = source.u16("symmetric.mode")
        if bits not in (128, 192, 256) or mode not in (TpmAlg.CFB, TpmAlg.NULL):
            raise source.fail(f"AES-{bits} mode {mode:#06x} is not supported")
        return cls(algorithm, bits, mode)

    def write(self, sink: Writer) -> Writer:
        sink.u16(self.algorithm)
        if self.algorithm != TpmAlg.NULL:
            sink.u16(self.key_bits).u16(self.mode)
        return sink


@dataclass(frozen=True)
class KeyedHashParms:
    """TPMS_KEYEDHASH_PARMS (Table 213)."""

    scheme: Scheme = Scheme()


@dataclass(frozen=True)
class SymCipherParms:
    """TPMS_SYMCIPHER_PARMS (Table 214)."""

    symmetric: SymDefObject = SymDefObject(TpmAlg.AES, 128, TpmAlg.CFB)


@dataclass(frozen=True)
class RsaParms:
    """TPMS_RSA_PARMS (Table 216); exponent 0 means 65537."""

    symmetric: SymDefObject = SymDefObject()
    scheme: Scheme = Scheme()
    key_bits: int = 2048
    exponent: int = 0


@dataclass(frozen=True)
class EccParms:
    """TPMS_ECC_PARMS (Table 217)."""

    symmetric: SymDefObject = SymDefObject()
    scheme: Scheme = Scheme()
    curve: int = TpmEccCurve.NIST_P256
    kdf: Scheme = Scheme()


@dataclass(frozen=True)
class EccPoint:
    """TPMS_ECC_POINT: two TPM2B_ECC_PARAMETER coordinates."""

    x: bytes = b""
    y: bytes = b""


Parms = KeyedHashParms | SymCipherParms | RsaParms | EccParms
_PARMS_TYPE: dict[int, type] = {
    TpmAlg.KEYEDHASH: KeyedHashParms,
    TpmAlg.SYMCIPHER: SymCipherParms,
    TpmAlg.RSA: RsaParms,
    TpmAlg.ECC: EccParms,
}


@dataclass(frozen=True)
class Public:
    """TPMT_PUBLIC; ``unique`` is bytes, or an :class:`EccPoint` for ECC objects.

    Its encoding is kept with it once known (the bytes it was parsed from, or the first
    :meth:`to_bytes`): the value cannot change, and the encoding is canonical (every accepted
    TPMT_PUBLIC is the one encoding of what it parses to), so the vTPM does not encode the
    same public area again at every command, for its Name or its volatile state."""

    _encoding: ClassVar[bytes] = b""  # the instance's own once set; never a field
    type: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    parameters: Parms
    unique: bytes | EccPoint

    def __post_init__(self) -> None:
        expected = _PARMS_TYPE.get(self.type)
        if expected is None or not isinstance(self.parameters, expected):
            raise FormatError(f"TPMT_PUBLIC: parameters do not match type {self.type:#06x}")
        if (self.type == TpmAlg.ECC) != isinstance(self.unique, EccPoint):
            raise FormatError("TPMT_PUBLIC: unique does not match the object type")
        if self.attributes & TPMA_OBJECT_RESERVED:
            raise FormatError(f"TPMT_PUBLIC: reserved objectAttributes {self.attributes:#010x}")
        if not (is_hash_alg(self.name_alg) or self.name_alg == TpmAlg.NULL):
            raise FormatError(f"TPMT_PUBLIC: nameAlg {self.name_alg:#06x} is not a hash")
        if len(self.auth_policy) > MAX_DIGEST:
            raise FormatError("TPMT_PUBLIC: authPolicy is longer than a digest")

    @classmethod
    def read(cls, source: Reader) -> Public:
        kind = source.u16("type")
        name_alg = source.u16("nameAlg")
        attributes = source.u32("objectAttributes")
        auth_policy = read_tpm2b(source, "authPolicy", MAX_DIGEST)
        parameters: Parms
        unique: bytes | EccPoint
        if kind == TpmAlg.KEYEDHASH:
            parameters = KeyedHashParms(Scheme.read(source, "keyedhash"))
        elif kind == TpmAlg.SYMCIPHER:
            parameters = SymCipherParms(SymDefObject.read(source))
        elif kind == TpmAlg.RSA:
            symmetric = SymDefObject.read(source)
            scheme = Scheme.read(source, "rsa")
            parameters = RsaParms(symmetric, scheme, source.u16("keyBits"), source.u32("exponent"))
        elif kind == TpmAlg.ECC:
            symmetric = SymDefObject.read(source)
            scheme = Scheme.read(source, "ecc")
            curve = source.u16("curveID")
            parameters = EccParms(symmetric, scheme, curve, Scheme.read(source, "kdf"))
        else:
            raise source.fail(f"object type {kind:#06x} is not supported")
        if kind == TpmAlg.ECC:
            x = read_tpm2b(source, "unique.x", 128)
            unique = EccPoint(x, read_tpm2b(source, "unique.y", 128))
        else:
            unique = read_tpm2b(source, "unique", MAX_UNIQUE)
        try:
            return cls(kind, name_alg, attributes, auth_policy, parameters, unique)
        except FormatError as error:
            raise source.fail(str(error)) from None

    def write(self, sink: Writer) -> Writer:
        sink.u16(self.type).u16(self.name_alg).u32(self.attributes)
        put_tpm2b(sink, self.auth_policy)
        parms = self.parameters
        if isinstance(parms, KeyedHashParms):
            parms.scheme.write(sink)
        elif isinstance(parms, SymCipherParms):
            parms.symmetric.write(sink)
        elif isinstance(parms, RsaParms):
            parms.symmetric.write(sink)
            parms.scheme.write(sink)
            sink.u16(parms.key_bits).u32(parms.exponent)
        else:
            parms.symmetric.write(sink)
            parms.scheme.write(sink)
            sink.u16(parms.curve)
            parms.kdf.write(sink)
        if isinstance(self.unique, EccPoint):
            put_tpm2b(sink, self.unique.x)
            put_tpm2b(sink, self.unique.y)
        else:
            put_tpm2b(sink, self.unique)
        return sink

    @classmethod
    def from_bytes(cls, data: bytes) -> Public:
        """Parse a TPMT_PUBLIC (no size prefix)."""
        source = reader(data, "TPMT_PUBLIC")
        value = cls.read(source)
        source.expect_end()
        object.__setattr__(value, "_encoding", bytes(data))
        return value

    @classmethod
    def read_tpm2b(cls, source: Reader, field: str = "TPM2B_PUBLIC") -> Public:
        """Read a TPM2B_PUBLIC whose size must cover the TPMT_PUBLIC exactly."""
        body = read_tpm2b(source, field)
        if not body:
            raise source.fail(f"{field} is empty")
        return cls.from_bytes(body)

    @classmethod
    def from_tpm2b(cls, data: bytes) -> Public:
        source = reader(data, "TPM2B_PUBLIC")
        value = cls.read_tpm2b(source)
        source.expect_end()
        return value

    def to_bytes(self) -> bytes:
        """TPMT_PUBLIC bytes (what the Name hashes)."""
        if not self._encoding:
            object.__setattr__(self, "_encoding", self.write(writer()).to_bytes())
        return self._encoding

    def to_tpm2b(self) -> bytes:
        return tpm2b(self.to_bytes())

    def name(self) -> bytes:
        """``nameAlg ‖ H_nameAlg(TPMT_PUBLIC)`` (Part 1 section 16)."""
        if self.name_alg == TpmAlg.NULL:
            raise FormatError("an object with nameAlg NULL has no Name")
        return self.name_alg.to_bytes(2, "big") + digest(self.name_alg, self.to_bytes())

    def with_unique(self, unique: bytes | EccPoint) -> Public:
        return replace(self, unique=unique)

    def has(self, flag: int) -> bool:
        return bool(self.attributes & flag)
