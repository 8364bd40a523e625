"""TPMT_SIGNATURE, TPMT_SIG_SCHEME and the TPMT_TK_* tickets.

TCG "TPM 2.0 Library, Part 2: Structures", revision 1.59: Table 156 (TPMT_SIG_SCHEME),
Tables 191–195 (TPMS_SIGNATURE_RSA: ``hash ‖ TPM2B sig``; TPMS_SIGNATURE_ECC: ``hash ‖ TPM2B r
‖ TPM2B s``), Table 196 (TPMT_SIGNATURE) and Tables 110–113 (TPMT_TK_CREATION,
TPMT_TK_VERIFIED, TPMT_TK_AUTH, TPMT_TK_HASHCHECK: ``tag ‖ hierarchy ‖ TPM2B digest``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.formats.tpm2.constants import TpmAlg, TpmRh, TpmSt, digest_size, is_hash_alg
from cvm.formats.tpm2.tpm2b import put_tpm2b, read_tpm2b, reader, writer
from cvm.wire import Reader, Writer

_RSA_SIGS = {TpmAlg.RSASSA, TpmAlg.RSAPSS}
_ECC_SIGS = {TpmAlg.ECDSA, TpmAlg.SM2, TpmAlg.ECSCHNORR}
MAX_SIG = 512


@dataclass(frozen=True)
class SigScheme:
    """TPMT_SIG_SCHEME: NULL or a signing scheme with its hash."""

    scheme: int = TpmAlg.NULL
    hash_alg: int = TpmAlg.NULL

    @classmethod
    def read(cls, source: Reader) -> SigScheme:
        scheme = source.u16("inScheme.scheme")
        if scheme == TpmAlg.NULL:
            return cls()
        if scheme not in _RSA_SIGS | _ECC_SIGS | {TpmAlg.HMAC}:
            raise source.fail(f"signature scheme {scheme:#06x} is not supported")
        hash_id = source.u16("inScheme.hashAlg")
        if not is_hash_alg(hash_id):
            raise source.fail(f"signature hash {hash_id:#06x} is not supported")
        return cls(scheme, hash_id)

    def write(self, sink: Writer) -> Writer:
        sink.u16(self.scheme)
        if self.scheme != TpmAlg.NULL:
            sink.u16(self.hash_alg)
        return sink


@dataclass(frozen=True)
class Signature:
    """TPMT_SIGNATURE: RSA (``sig``), ECC (``r``, ``s``) or HMAC (``sig`` = digest)."""

    sig_alg: int
    hash_alg: int = TpmAlg.NULL
    sig: bytes = b""
    r: bytes = b""
    s: bytes = b""

    @classmethod
    def read(cls, source: Reader) -> Signature:
        alg = source.u16("sigAlg")
        if alg == TpmAlg.NULL:
            return cls(alg)
        hash_id = source.u16("hash")
        if not is_hash_alg(hash_id):
            raise source.fail(f"signature hash {hash_id:#06x} is not supported")
        if alg in _RSA_SIGS:
            return cls(alg, hash_id, sig=read_tpm2b(source, "sig", MAX_SIG))
        if alg in _ECC_SIGS:
            r = read_tpm2b(source, "signatureR", 128)
            return cls(alg, hash_id, r=r, s=read_tpm2b(source, "signatureS", 128))
        if alg == TpmAlg.HMAC:
            return cls(alg, hash_id, sig=source.take(digest_size(hash_id), "digest"))
        raise source.fail(f"signature algorithm {alg:#06x} is not supported")

    @classmethod
    def from_bytes(cls, data: bytes) -> Signature:
        source = reader(data, "TPMT_SIGNATURE")
        value = cls.read(source)
        source.expect_end()
        return value

    def write(self, sink: Writer) -> Writer:
        sink.u16(self.sig_alg)
        if self.sig_alg == TpmAlg.NULL:
            return sink
        sink.u16(self.hash_alg)
        if self.sig_alg in _ECC_SIGS:
            put_tpm2b(sink, self.r)
            return put_tpm2b(sink, self.s)
        if self.sig_alg == TpmAlg.HMAC:
            return sink.put(self.sig)
        return put_tpm2b(sink, self.sig)

    def to_bytes(self) -> bytes:
        return self.write(writer()).to_bytes()


@dataclass(frozen=True)
class Ticket:
    """A TPMT_TK_* ticket: ``tag ‖ hierarchy ‖ TPM2B digest`` (a NULL ticket has no digest)."""

    tag: int
    hierarchy: int = TpmRh.NULL
    digest: bytes = b""

    @classmethod
    def null(cls, tag: int) -> Ticket:
        return cls(tag, TpmRh.NULL, b"")

    @classmethod
    def read(cls, source: Reader) -> Ticket:
        tag = source.u16("ticket.tag")
        if tag not in (TpmSt.CREATION, TpmSt.VERIFIED, TpmSt.HASHCHECK, TpmSt.AUTH_SECRET,
                       TpmSt.AUTH_SIGNED):
            raise source.fail(f"ticket tag {tag:#06x} is not a ticket")
        hierarchy = source.u32("ticket.hierarchy")
        return cls(tag, hierarchy, read_tpm2b(source, "ticket.digest", 64))

    @classmethod
    def from_bytes(cls, data: bytes) -> Ticket:
        source = reader(data, "TPMT_TK")
        value = cls.read(source)
        source.expect_end()
        return value

    def write(self, sink: Writer) -> Writer:
        sink.u16(self.tag).u32(self.hierarchy)
        return put_tpm2b(sink, self.digest)

    def to_bytes(self) -> bytes:
        return self.write(writer()).to_bytes()
