"""TPM2_Hash and the hash-check tickets it issues.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59, section 15.4 (TPM2_Hash): the digest of
at most ``MAX_DIGEST_BUFFER`` bytes, with a TPMT_TK_HASHCHECK ticket saying the TPM computed it
over data that does not begin with TPM_GENERATED_VALUE — so a restricted signing key may sign
the digest (TPM2_Sign, section 20.2) without being able to sign a forged TPMS_ATTEST. The ticket
is ``HMAC(proof(hierarchy), TPM_ST_HASHCHECK ‖ digest)`` (Part 2, TPMT_TK_HASHCHECK); a NULL
ticket for the NULL hierarchy or data that begins with TPM_GENERATED_VALUE.
"""

from __future__ import annotations

import hmac as std_hmac
from typing import TYPE_CHECKING

from cvm.crypto.tpm_kdf import hmac
from cvm.formats.tpm2.constants import TPM_GENERATED_VALUE, TpmCc, TpmRh, TpmSt, digest, is_hash_alg
from cvm.formats.tpm2.response_code import TpmRc, for_parameter
from cvm.formats.tpm2.signature import Ticket
from cvm.formats.tpm2.tpm2b import tpm2b
from cvm.vtpm.dispatch import Call, Result, register
from cvm.vtpm.tpm_object import fail

if TYPE_CHECKING:
    from cvm.vtpm.engine import Tpm

MAX_DIGEST_BUFFER = 1024
HIERARCHIES = (TpmRh.OWNER, TpmRh.ENDORSEMENT, TpmRh.PLATFORM, TpmRh.NULL)
_GENERATED = TPM_GENERATED_VALUE.to_bytes(4, "big")


def hash_check_ticket(tpm: Tpm, hierarchy: int, value: bytes) -> Ticket:
    """The TPMT_TK_HASHCHECK for ``value`` computed by this TPM in ``hierarchy``."""
    if hierarchy == TpmRh.NULL:
        return Ticket.null(TpmSt.HASHCHECK)
    mac = hmac("sha256", tpm.proof(hierarchy), TpmSt.HASHCHECK.to_bytes(2, "big"), value)
    return Ticket(TpmSt.HASHCHECK, hierarchy, mac)


def is_hash_check(tpm: Tpm, ticket: Ticket, value: bytes) -> bool:
    """Whether ``ticket`` is a non-NULL hash-check ticket this TPM issued for ``value``."""
    if ticket.tag != TpmSt.HASHCHECK or ticket.hierarchy not in HIERARCHIES[:3]:
        return False
    return std_hmac.compare_digest(hash_check_ticket(tpm, ticket.hierarchy, value).digest,
                                   ticket.digest)


def hash_(tpm: Tpm, call: Call) -> Result:
    size = call.params.u16("data.size")
    if size > MAX_DIGEST_BUFFER:  # TPM2B_MAX_BUFFER
        raise fail(for_parameter(TpmRc.SIZE, 1), "data is larger than MAX_DIGEST_BUFFER")
    data = call.params.take(size, "data")
    hash_alg = call.parameter(2).u16("hashAlg")
    hierarchy = call.parameter(3).u32("hierarchy")
    call.done()
    if not is_hash_alg(hash_alg):
        raise fail(for_parameter(TpmRc.HASH, 2), "hashAlg is not a hash algorithm")
    if hierarchy not in HIERARCHIES:
        raise fail(for_parameter(TpmRc.VALUE, 3), "hierarchy is not a hierarchy or NULL")
    out = digest(hash_alg, data)
    if data.startswith(_GENERATED):  # could be a forged TPMS_ATTEST: no ticket
        ticket = Ticket.null(TpmSt.HASHCHECK)
    else:
        ticket = hash_check_ticket(tpm, hierarchy, out)
    return Result(parameters=tpm2b(out) + ticket.to_bytes())


# This module's row of the command table (Part 3: no handles), registered explicitly so the
# handler stays a plain function.
register(TpmCc.HASH, hash_)
