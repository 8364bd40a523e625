"""TPMT_SENSITIVE, TPM2B_SENSITIVE_CREATE and the TPM2B_PRIVATE blob.

TCG "TPM 2.0 Library, Part 2: Structures", revision 1.59: Table 224 (TPMT_SENSITIVE:
``sensitiveType ‖ TPM2B authValue ‖ TPM2B seedValue ‖ TPMU_SENSITIVE_COMPOSITE``), Table 145
(TPMS_SENSITIVE_CREATE: ``TPM2B userAuth ‖ TPM2B data``), Table 146 (TPM2B_SENSITIVE_CREATE),
Table 226 (_PRIVATE) and Table 227 (TPM2B_PRIVATE). Part 1 section 23.3 ("Symmetric
Encryption of Sensitive Area"): the protected private area of an object stored under a
parent is ``TPM2B integrityHMAC ‖ TPM2B IV ‖ CFB(u16 size ‖ TPMT_SENSITIVE)`` (the IV is
present because the parent's symmetric mode is CFB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cvm.errors import FormatError
from cvm.formats.tpm2.constants import TpmAlg
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, tpm2b, writer
from cvm.wire import Reader, Writer

MAX_AUTH = 64
MAX_SENSITIVE = 1024
MAX_SENSITIVE_DATA = 256
MAX_PRIVATE = 2048
_SENSITIVE_TYPES = {TpmAlg.RSA, TpmAlg.ECC, TpmAlg.KEYEDHASH, TpmAlg.SYMCIPHER}


@dataclass(frozen=True)
class Sensitive:
    """TPMT_SENSITIVE: the secret half of an object.

    Like :class:`~cvm.formats.tpm2.public.Public`, it keeps its (canonical) encoding once
    known; the encoding is as secret as the value and goes with the instance."""

    _encoding: ClassVar[bytes] = b""  # the instance's own once set; never a field
    sensitive_type: int
    auth_value: bytes
    seed_value: bytes
    sensitive: bytes

    @classmethod
    def read(cls, source: Reader) -> Sensitive:
        kind = source.u16("sensitiveType")
        if kind not in _SENSITIVE_TYPES:
            raise source.fail(f"sensitiveType {kind:#06x} is not supported")
        auth = read_tpm2b(source, "authValue", MAX_AUTH)
        seed = read_tpm2b(source, "seedValue", MAX_AUTH)
        return cls(kind, auth, seed, read_tpm2b(source, "sensitive", MAX_SENSITIVE))

    @classmethod
    def from_bytes(cls, data: bytes) -> Sensitive:
        source = reader(data, "TPMT_SENSITIVE")
        value = cls.read(source)
        source.expect_end()
        object.__setattr__(value, "_encoding", bytes(data))
        return value

    def write(self, sink: Writer) -> Writer:
        sink.u16(self.sensitive_type)
        put_tpm2b(sink, self.auth_value, MAX_AUTH)
        put_tpm2b(sink, self.seed_value, MAX_AUTH)
        return put_tpm2b(sink, self.sensitive, MAX_SENSITIVE)

    def to_bytes(self) -> bytes:
        if not self._encoding:
            object.__setattr__(self, "_encoding", self.write(writer()).to_bytes())
        return self._encoding


@dataclass(frozen=True)
class SensitiveCreate:
    """TPMS_SENSITIVE_CREATE, marshalled inside a TPM2B_SENSITIVE_CREATE."""

    user_auth: bytes = b""
    data: bytes = b""

    @classmethod
    def read_tpm2b(cls, source: Reader) -> SensitiveCreate:
        inner = reader(read_tpm2b(source, "TPM2B_SENSITIVE_CREATE"), "TPMS_SENSITIVE_CREATE")
        auth = read_tpm2b(inner, "userAuth", MAX_AUTH)
        data = read_tpm2b(inner, "data", MAX_SENSITIVE_DATA)
        inner.expect_end()
        return cls(auth, data)

    def to_tpm2b(self) -> bytes:
        body = writer()
        put_tpm2b(body, self.user_auth, MAX_AUTH)
        put_tpm2b(body, self.data, MAX_SENSITIVE_DATA)
        return tpm2b(body.to_bytes())


@dataclass(frozen=True)
class PrivateBlob:
    """The buffer of a TPM2B_PRIVATE made under a CFB storage parent."""

    integrity: bytes
    iv: bytes
    encrypted: bytes

    @classmethod
    def read_tpm2b(cls, source: Reader) -> PrivateBlob:
        return cls.from_buffer(read_tpm2b(source, "TPM2B_PRIVATE", MAX_PRIVATE))

    @classmethod
    def from_buffer(cls, buffer: bytes) -> PrivateBlob:
        source = reader(buffer, "_PRIVATE")
        integrity = read_tpm2b(source, "integrityOuter", MAX_AUTH)
        iv = read_tpm2b(source, "iv", 16)
        encrypted = source.rest()
        if not integrity or not encrypted:
            raise FormatError("_PRIVATE: integrity or encrypted sensitive area is empty")
        return cls(integrity, iv, encrypted)

    @classmethod
    def from_tpm2b(cls, data: bytes) -> PrivateBlob:
        source = reader(data, "TPM2B_PRIVATE")
        value = cls.read_tpm2b(source)
        source.expect_end()
        return value

    def buffer(self) -> bytes:
        return tpm2b(self.integrity) + tpm2b(self.iv) + self.encrypted

    def to_tpm2b(self) -> bytes:
        return tpm2b(self.buffer(), MAX_PRIVATE)

    def integrity_region(self) -> bytes:
        """``TPM2B IV ‖ ciphertext``: what the integrity HMAC covers before the Name."""
        return tpm2b(self.iv) + self.encrypted
